// Everything mes-bridge runs on, in one resource group. Identity-only: no shared keys, no
// connection strings; one user-assigned identity with the least roles each resource needs.
param environmentName string
param location string
param tags object
param foBaseUrl string
param foTenantId string
param foClientId string
@secure()
param foClientSecret string
param foDefaultCompany string
param foCompanies string
param plantTimeZone string
param eventSubscriptions bool
param alertEmail string
@description('Spread the Function App across availability zones (where the region supports it for Flex Consumption)')
param zoneRedundant bool = false
@minLength(10)
@description('When the Entra client secret expires (ISO 8601, from the app registration): the Key Vault secret carries it and an alert fires 30 days before')
param foClientSecretExpiresOn string
@description('Purge protection on the Key Vault: irreversible, and a purged-protected vault keeps its name for 90 days after azd down; production turns it on')
param keyVaultPurgeProtection bool = false
@description('Recover the soft-deleted vault of an earlier azd down instead of creating it (the preprovision hook sets it)')
param keyVaultRecover bool = false
@minValue(1)
@description('Requests per second F&O may take from the bridge in all instances together (F&O allows 6,000 per user per 5 minutes per web server: 20/s)')
param foBudgetPerSecond int = 20
@allowed(['adaptive', 'static'])
@description('adaptive: every instance may use up to the whole budget and its pacer learns its share from F&O\'s 429s; static: each instance is held to budget / maximumInstanceCount (no 429s, a lone busy instance stays slow)')
param foBudgetSharing string = 'adaptive'
@minValue(0)
@maxValue(5)
@description('Always-ready instances per inbound (Service Bus) function: 0 scales them to zero; each ready instance is billed while idle')
param alwaysReadyInbound int = 0
@minValue(1)
@description('Alert when a message waited longer than this in its queue before the bridge took it (minutes)')
param backlogAgeMinutes int = 15
@description('Share of the worker\'s spans (dependencies: F&O and Table Storage calls) kept, 0 to 1; logs and the host\'s requests are never sampled')
param traceSamplingRatio string = '0.1'
@description('Client id of the operator console\'s Entra app registration (app role MesBridge.Operator); empty: no console sign-in')
param consoleClientId string = ''

var topology = loadJsonContent('../shared/topology.json')
// The inbound flows; their queue names are read from topology.json (a test keeps this list in step with it).
var inboundFlows = [
  'production_started'
  'material_consumed'
  'operation_reported'
  'output_reported'
  'production_ended'
  'quality_result'
  'inventory_moved'
  'inventory_adjusted'
]
var eventFunctions = ['order_released', 'order_status_changed', 'message_processed']
// The Service Bus function of each inbound flow (functions/<flow>.py registers it under the flow's name).
var inboundFunctions = inboundFlows

var alwaysReadyFunctions = (alwaysReadyInbound > 0) ? inboundFunctions : []

// --- F&O's budget, split over the instances (README "Scale and F&O's budget") -------------------
// Flex Consumption scales every Service Bus and Event Grid function on instances of its own; each
// instance paces its F&O calls alone, so the budget is divided by the most instances there can be.
// One instance per request per second of budget, never below the plan's lowest maximum (40) nor
// above its highest (1000) (learn.microsoft.com/azure/azure-functions/flex-consumption-plan).
var maximumInstanceCount = min(1000, max(40, foBudgetPerSecond))
var instanceBudgetMilli = (foBudgetPerSecond * 1000) / maximumInstanceCount
var instanceBudgetWhole = instanceBudgetMilli / 1000
var instanceBudgetFraction = padLeft(string(instanceBudgetMilli % 1000), 3, '0')
var instanceBudget = '${instanceBudgetWhole}.${instanceBudgetFraction}'
// At about one second per F&O call, an instance needs one concurrent call per request per second.
var instanceConcurrency = min(16, max(1, (foBudgetPerSecond + maximumInstanceCount - 1) / maximumInstanceCount))
var staticSharing = foBudgetSharing == 'static'
var token = toLower(uniqueString(subscription().id, environmentName, location))
var packageContainer = 'app-package'
var deadLetterContainer = 'eventgrid-deadletter'

// Built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles)
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-mesbridge-${token}'
  location: location
  tags: tags
}

// --- monitoring ---------------------------------------------------------------------------------
resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: 'log-mesbridge-${token}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 90
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-mesbridge-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// --- storage: host, deployment package, ledger tables, Event Grid dead letters ------------------
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stmesbridge${take(token, 12)}'
  location: location
  tags: tags
  // Geo-zone-redundant: the ledger is the record of every MES message.
  sku: { name: 'Standard_GZRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    //checkov:skip=CKV_AZURE_43: the name is 'stmesbridge' + 12 lowercase characters of uniqueString: 23 alphanumerics
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    //checkov:skip=CKV_AZURE_59: Flex Consumption without a VNet reaches storage publicly; access is Entra-only (no shared keys)
    publicNetworkAccess: 'Enabled'
    //checkov:skip=CKV_AZURE_35: default Allow for the same reason; every request still needs an Entra role
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource packages 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: packageContainer
  properties: { publicAccess: 'None' }
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deadLetterContainer
  properties: { publicAccess: 'None' }
}

// --- Service Bus: one session queue per inbound flow, the MES topic ------------------------------
resource bus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-mesbridge-${token}'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    //checkov:skip=CKV_AZURE_204: private endpoints need the Premium tier and a VNet; Standard gives sessions and duplicate detection
    publicNetworkAccess: 'Enabled'
  }
}

resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for flow in inboundFlows: {
  parent: bus
  name: topology.inbound_queues[flow]
  properties: {
    requiresSession: true // SessionId = production order: FIFO per order within a flow
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    // Longer than one F&O call with its retries (FO_CALL_DEADLINE_S 120 s); the host renews it up to 5 min.
    lockDuration: 'PT5M'
    defaultMessageTimeToLive: 'P14D'
    enablePartitioning: false
  }
}]

resource mesTopic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = {
  parent: bus
  name: topology.mes_topic
  properties: {
    requiresDuplicateDetection: true // MessageId derives from the F&O EventId: a re-sent event is dropped
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    defaultMessageTimeToLive: 'P14D'
    enablePartitioning: false
  }
}

resource mesSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = {
  parent: mesTopic
  name: topology.mes_subscription
  properties: {
    requiresSession: true // the MES reads each production order in order
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    lockDuration: 'PT1M'
    defaultMessageTimeToLive: 'P14D'
  }
}

// --- Key Vault for the F&O secret ---------------------------------------------------------------
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-mesb-${take(token, 13)}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    // 'recover' brings back the vault an earlier `azd down` soft-deleted: same name, same secrets.
    createMode: keyVaultRecover ? 'recover' : 'default'
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // Purge protection cannot be turned off once on (the property accepts no false), so it is left
    // unset in development, where `azd down --purge` must free the name.
    //checkov:skip=CKV_AZURE_110: purge protection is the keyVaultPurgeProtection parameter, on in production (see README)
    //checkov:skip=CKV_AZURE_42: recoverable: soft delete is always on; purge protection is the keyVaultPurgeProtection parameter
    enablePurgeProtection: keyVaultPurgeProtection ? true : null
    //checkov:skip=CKV_AZURE_189: the Function App reads the secret over the public endpoint (no VNet here); RBAC only
    publicNetworkAccess: 'Enabled'
    //checkov:skip=CKV_AZURE_109: trusted Azure services bypass; everything else needs an Entra role
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource foSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'fo-client-secret'
  properties: {
    value: foClientSecret
    contentType: 'Entra client secret of the F&O integration app'
    attributes: {
      enabled: true
      // The app registration's own expiry, a parameter: it must not move with every deployment.
      exp: dateTimeToEpoch(foClientSecretExpiresOn)
    }
  }
}


// --- the Function App (Flex Consumption) ---------------------------------------------------------
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-mesbridge-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: {
    reserved: true
    //checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter: not every region offers it for Flex Consumption
    zoneRedundant: zoneRedundant
  }
}

var appSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  // In OpenTelemetry mode host.json samplingSettings do nothing; the worker's Azure Monitor
  // distro samples its spans by these standard variables (README "Telemetry cost").
  OTEL_TRACES_SAMPLER: 'microsoft.fixed_percentage'
  OTEL_TRACES_SAMPLER_ARG: traceSamplingRatio
  // azure-core's own spans (two per Table call, three for a single-entity one) duplicate the
  // dependency span the requests instrumentation already makes for the same HTTP call: a third of
  // an event's telemetry CPU and of its dependency items (BENCHMARKS.md). devtools/bench.py reads it here.
  OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: 'azure_sdk'
  FO_BASE_URL: foBaseUrl
  FO_AUTH_MODE: 'client_secret'
  FO_TENANT_ID: foTenantId
  FO_CLIENT_ID: foClientId
  FO_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${foSecret.properties.secretUri})'
  FO_DEFAULT_COMPANY: foDefaultCompany
  FO_COMPANIES: foCompanies
  PLANT_TIME_ZONE: plantTimeZone
  FO_CALL_DEADLINE_S: '120'
  // Adaptive (default): no instance goes past the whole budget, and the pacers share it by 429s
  // (README "Scale and F&O's budget"). Static: a fixed share each, empty = unset for the other.
  FO_BUDGET_RPS: string(foBudgetPerSecond)
  FO_INSTANCE_BUDGET_RPS: staticSharing ? instanceBudget : ''
  FO_MAX_CONCURRENCY: string(staticSharing ? instanceConcurrency : 16)
  MESSAGE_LOCK_BUDGET_S: '300'
  TABLES_ENDPOINT: storage.properties.primaryEndpoints.table
  TABLES_CLIENT_ID: identity.properties.clientId
  TABLES_PREFIX: 'mesbridge'
  ServiceBusConnection__fullyQualifiedNamespace: '${bus.name}.servicebus.windows.net'
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identity.properties.clientId
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-mesbridge-${token}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    //checkov:skip=CKV_AZURE_17: no incoming client certificates: triggers are Service Bus and Event Grid, operations use function keys
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    //checkov:skip=CKV_AZURE_222: Flex Consumption without a VNet is reached over the public endpoint; HTTP functions need function keys
    publicNetworkAccess: 'Enabled'
    //checkov:skip=CKV_AZURE_212: Flex Consumption scales out per trigger from zero; always-ready instances are a cost choice
    //checkov:skip=CKV_AZURE_213: no HTTP health endpoint yet (the operations functions will add one); the alerts watch failures
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${packageContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: 2048
        maximumInstanceCount: maximumInstanceCount
        // Individually scaled functions are named 'function:<name>' (learn.microsoft.com/azure/azure-functions/flex-consumption-how-to).
        alwaysReady: [for fn in alwaysReadyFunctions: {
          name: 'function:${fn}'
          instanceCount: alwaysReadyInbound
        }]
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
  dependsOn: [packages]
}

// checkov reads this app-settings resource as web config; its checks belong to the site above:
//   CKV_AZURE_13 (App Service Authentication: authsettingsV2 below (consoleSignIn) turns it on for the console;
//   the operations API and Event Grid's webhook keep their keys),
//   CKV_AZURE_63/65/66 (HTTP logs, detailed errors, failed request tracing: Application Insights records them),
//   CKV_AZURE_80 (.NET version: this is a Python app), CKV_AZURE_88 (Azure Files: Flex deploys from blob),
//   CKV_AZURE_222 (public access: see the site)
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13: see above
  //checkov:skip=CKV_AZURE_63: see above
  //checkov:skip=CKV_AZURE_65: see above
  //checkov:skip=CKV_AZURE_66: see above
  //checkov:skip=CKV_AZURE_80: see above
  //checkov:skip=CKV_AZURE_88: see above
  //checkov:skip=CKV_AZURE_222: see above
  parent: app
  name: 'appsettings'
  properties: appSettings
  // The Key Vault reference resolves with the app's identity: without its role the first resolution
  // fails and the literal reference string reaches the worker (start-up then refuses it, by name).
  dependsOn: [secretReader]
}

// --- Event Grid: F&O business events to the three functions ---------------------------------------
resource events 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: 'evgt-mesbridge-${token}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    inputSchema: 'EventGridSchema'
    //checkov:skip=CKV_AZURE_193: F&O publishes over the public endpoint (it is a SaaS outside any VNet)
    publicNetworkAccess: 'Enabled'
    //checkov:skip=CKV_AZURE_192: F&O's Event Grid endpoint authenticates with the topic access key (kept in Key Vault on the F&O side)
    disableLocalAuth: false
  }
}

resource eventSubscriptionsOfFunctions 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = [for fn in (eventSubscriptions ? eventFunctions : []): {
  parent: events
  name: replace(fn, '_', '-')
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${app.id}/functions/${fn}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    // No event-type filter: F&O's eventType values are not documented; each function ignores other events.
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
  dependsOn: [settings, topicWritesDeadLetters]
}]

// --- least-privilege role assignments -----------------------------------------------------------
resource hostStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource ledgerTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Each inbound queue: receive (trigger), send (the pipeline schedules waiting messages on it) and
// manage (the scale controller reads the queue's message count, which needs the Manage right; with
// Data Receiver alone it logs unauthorized warnings and scales without the queue length). Data Owner
// is the built-in role the trigger documentation lists for that; it is scoped to each queue, so it
// reaches no other entity of the namespace.
resource queueOwners 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (flow, i) in inboundFlows: {
  name: guid(queues[i].id, identity.id, roles.serviceBusDataOwner)
  scope: queues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(mesTopic.id, identity.id, roles.serviceBusDataSender)
  scope: mesTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The Event Grid topic's own identity writes undeliverable events to the dead-letter container only.
resource topicWritesDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, events.id, roles.storageBlobDataContributor)
  scope: deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: events.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- alerts ------------------------------------------------------------------------------------
resource responders 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-mesbridge-${token}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'mesbridge'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-mesbridge-dead-letters-${token}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Service Bus dead-lettered a message: the broker gave up on it (MaxDeliveryCountExceeded or expiry)'
    severity: 1
    enabled: true
    scopes: [bus.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'deadletters'
          metricName: 'DeadletteredMessages'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
          criterionType: 'StaticThresholdCriterion'
        }
      ]
    }
    actions: [
      {
        actionGroupId: responders.id
        webHookProperties: { workbook: workbookUrl }
      }
    ]
  }
}

// A queue that stayed non-empty for a whole hour: the bridge is not draining it (stopped, or every
// delivery failing). One alert per queue: the EntityName dimension splits it.
resource queueNotDraining 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-mesbridge-queue-not-draining-${token}'
  location: 'global'
  tags: tags
  properties: {
    description: 'An inbound queue held messages for a whole hour without ever emptying: is the bridge running?'
    severity: 2
    enabled: true
    scopes: [bus.id]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'backlog'
          metricName: 'ActiveMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [for flow in inboundFlows: topology.inbound_queues[flow]]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Minimum'
          criterionType: 'StaticThresholdCriterion'
        }
      ]
    }
    actions: [
      {
        actionGroupId: responders.id
        webHookProperties: { workbook: workbookUrl }
      }
    ]
  }
}

// Event Grid gave up on an F&O business event (30 attempts over 24 h) and wrote it to the
// dead-letter container (metric DeadLetteredCount, learn.microsoft.com/azure/event-grid/monitor-push-reference).
resource eventsDeadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-mesbridge-event-dead-letters-${token}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid dead-lettered an F&O business event: see the eventgrid-deadletter container'
    severity: 1
    enabled: true
    scopes: [events.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'deadletters'
          metricName: 'DeadLetteredCount'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
          criterionType: 'StaticThresholdCriterion'
        }
      ]
    }
    actions: [
      {
        actionGroupId: responders.id
        webHookProperties: { workbook: workbookUrl }
      }
    ]
  }
}

// How long the oldest message of each flow waited in its queue before the bridge took it
// (queue_age_s on every outcome line), split by flow: one alert per queue.
resource backlogAge 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-mesbridge-backlog-age-${token}'
  location: location
  tags: tags
  properties: {
    description: 'Messages waited longer than ${backlogAgeMinutes} minutes in their queue: the bridge falls behind the MES'
    severity: 2
    enabled: true
    scopes: [insights.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where isnotempty(customDimensions.queue_age_s) | extend flow = tostring(customDimensions.flow), age_s = todouble(customDimensions.queue_age_s) | summarize age_s = max(age_s) by flow'
          metricMeasureColumn: 'age_s'
          dimensions: [
            {
              name: 'flow'
              operator: 'Include'
              values: ['*']
            }
          ]
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: backlogAgeMinutes * 60
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        responders.id
      ]
      customProperties: { workbook: workbookUrl }
    }
  }
}

// The Entra client secret expires on a date the app registration fixed (a parameter, so no
// deployment moves it); from 30 days before, this fires every 6 hours until the secret is rotated.
resource secretExpiry 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-mesbridge-secret-expiry-${token}'
  location: location
  tags: tags
  properties: {
    description: 'The F&O client secret expires on ${foClientSecretExpiresOn}: create a new one, then azd env set FO_CLIENT_SECRET and FO_CLIENT_SECRET_EXPIRES_ON and azd provision'
    severity: 2
    enabled: true
    scopes: [insights.id]
    evaluationFrequency: 'PT6H'
    windowSize: 'PT6H'
    criteria: {
      allOf: [
        {
          query: 'print expires_on = datetime(${foClientSecretExpiresOn}) | where now() > expires_on - 30d'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        responders.id
      ]
      customProperties: { workbook: workbookUrl }
    }
  }
}

var logAlerts = [
  {
    name: 'parked'
    severity: 2
    description: 'MES messages were parked for an operator (invalid, rejected by F&O, in doubt, gap)'
    query: 'traces | where customDimensions.outcome == "parked"'
  }
  {
    name: 'failures'
    severity: 1
    description: 'Function executions fail (the broker or Event Grid retries them)'
    query: 'requests | where success == false'
  }
  {
    name: 'fo-auth'
    severity: 1
    description: 'F&O or Entra refused the bridge\'s credentials (expired or wrong secret, app not registered in F&O): nothing is forwarded'
    query: 'traces | where customDimensions.outcome == "auth"'
  }
  {
    name: 'throttling'
    severity: 3
    description: 'F&O throttles the bridge (HTTP 429): ask for High throttling priority or lower FO_MAX_CONCURRENCY'
    query: 'traces | where customDimensions.reason == "throttled"'
  }
]

resource queryAlerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in logAlerts: {
  name: 'alert-mesbridge-${alert.name}-${token}'
  location: location
  tags: tags
  properties: {
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [insights.id]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        responders.id
      ]
      customProperties: { workbook: workbookUrl }
    }
  }
}]

// --- the operator console: App Service authentication (Entra ID) -----------------------------------
// The console (/api/console/, /api/console-api/) is anonymous at the Functions host: App Service
// authentication signs the operator in and passes the validated principal (X-MS-CLIENT-PRINCIPAL);
// functions/console.py requires the MesBridge.Operator app role on every call. Key-holding callers
// keep working: the operations API (function keys) and Event Grid's webhook (its system key) are
// left out of the sign-in redirect, each path by name.
var operationsRoutes = [
  'message'
  'message-detail'
  'order'
  'order-ladder'
  'parked'
  'dead-lettered'
  'dead-lettered/resubmit'
  'resubmit'
  'cancel'
  'confirm'
  'release-gap'
  'lineage'
  'health'
  'overview'
]

var operationsPaths = [for route in operationsRoutes: '/api/ops/${route}']

// checkov reads this sites/config resource as web config too: the same checks as on the app settings
// above belong to the site (CKV_AZURE_13 is this resource's very purpose).
resource consoleSignIn 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13: this resource is App Service Authentication
  //checkov:skip=CKV_AZURE_63: see the app settings resource
  //checkov:skip=CKV_AZURE_65: see the app settings resource
  //checkov:skip=CKV_AZURE_66: see the app settings resource
  //checkov:skip=CKV_AZURE_80: see the app settings resource
  //checkov:skip=CKV_AZURE_88: see the app settings resource
  //checkov:skip=CKV_AZURE_222: see the app settings resource
  parent: app
  name: 'authsettingsV2'
  properties: {
    // Without a console registration, authentication stays off (and the console API refuses every call).
    platform: { enabled: !empty(consoleClientId) }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: concat(['/runtime/webhooks/eventgrid'], operationsPaths)
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: !empty(consoleClientId)
        registration: {
          clientId: consoleClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: ['api://${consoleClientId}', consoleClientId]
        }
      }
    }
    login: {
      tokenStore: { enabled: false }
      preserveUrlFragmentsForLogins: true
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

// --- the operations workbook: the console's overview from Application Insights ----------------------
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'mesbridge-operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'mes-bridge operations (${environmentName})'
    category: 'workbook'
    sourceId: insights.id
    version: 'Notebook/1.0'
    serializedData: replace(replace(loadTextContent('workbook.json'), '__SERVICEBUS_ID__', bus.id), '__APPINSIGHTS_ID__', insights.id)
  }
}

// Every alert carries this link (webHookProperties / customProperties, in the common alert schema).
var workbookUrl = 'https://portal.azure.com/#@${tenant().tenantId}/resource${workbook.id}/workbook'

output functionAppName string = app.name
output serviceBusNamespace string = bus.name
output eventGridTopicEndpoint string = events.properties.endpoint
output keyVaultName string = vault.name
output workbookUrl string = workbookUrl
output consoleUrl string = 'https://${app.properties.defaultHostName}/api/console/'
