// The mes-bridge landscape, for `azd up` (or `az deployment sub create`). Hand-written, no
// registry modules, so it parses offline. Queue and topic names come from shared/topology.json.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names and tags derive from it')
param environmentName string

@minLength(1)
@description('Azure region for every resource')
param location string

@description('F&O environment URL, https://<env>.operations.dynamics.com')
param foBaseUrl string

@description('Entra tenant of the F&O environment')
param foTenantId string

@description('Client id of the Entra app registered in F&O under Microsoft Entra ID applications')
param foClientId string

@secure()
@description('Client secret of that app; stored in Key Vault, never in app settings')
param foClientSecret string

@minLength(10)
@description('When the client secret expires (ISO 8601, as the app registration shows it, e.g. 2027-11-01T00:00:00Z): azd env set FO_CLIENT_SECRET_EXPIRES_ON')
param foClientSecretExpiresOn string

@description('Key Vault purge protection (irreversible; the vault name stays taken 90 days after azd down): on in production')
param keyVaultPurgeProtection bool = false

@description('Recover a soft-deleted vault of the same name (set by the preprovision hook after an azd down)')
param keyVaultRecover bool = false

@minValue(1)
@description('F&O requests per second the bridge may use in all; sets the instance count and each instance\'s share')
param foBudgetPerSecond int = 20

@allowed(['adaptive', 'static'])
@description('How instances share the F&O budget: adaptive (learned from 429s, a lone instance may use it all) or static (budget / maximumInstanceCount each)')
param foBudgetSharing string = 'adaptive'

@minValue(0)
@maxValue(5)
@description('Always-ready instances per inbound function (0: scale to zero, no idle cost)')
param alwaysReadyInbound int = 0

@minValue(1)
@description('Alert when a message waited longer than this many minutes in its queue')
param backlogAgeMinutes int = 15

@description('Share of the worker\'s spans kept (0 to 1); logs and requests are never sampled')
param traceSamplingRatio string = '0.1'

@description('Legal entity (dataAreaId) used when a message names none')
param foDefaultCompany string = 'USMF'

@description('Comma-separated legal entities the bridge may write to')
param foCompanies string = 'USMF'

@description('IANA time zone of the plant (e.g. America/Chicago): its calendar dates every transaction sent to F&O')
param plantTimeZone string = 'UTC'

@description('Create the Event Grid subscriptions (needs the functions deployed first: azd sets it in postdeploy)')
param eventSubscriptions bool = false

@description('E-mail for alerts (empty: alerts fire without notifying anyone)')
param alertEmail string = ''

@description('Spread the Function App across availability zones where the region supports it')
param zoneRedundant bool = false

@description('Client id of the operator console\'s Entra app registration (app role MesBridge.Operator); empty: no console sign-in')
param consoleClientId string = ''

var tags = { 'azd-env-name': environmentName }

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'mes-bridge-resources'
  scope: group
  params: {
    environmentName: environmentName
    location: location
    tags: tags
    foBaseUrl: foBaseUrl
    foTenantId: foTenantId
    foClientId: foClientId
    foClientSecret: foClientSecret
    foClientSecretExpiresOn: foClientSecretExpiresOn
    keyVaultPurgeProtection: keyVaultPurgeProtection
    keyVaultRecover: keyVaultRecover
    foBudgetPerSecond: foBudgetPerSecond
    foBudgetSharing: foBudgetSharing
    alwaysReadyInbound: alwaysReadyInbound
    backlogAgeMinutes: backlogAgeMinutes
    traceSamplingRatio: traceSamplingRatio
    foDefaultCompany: foDefaultCompany
    foCompanies: foCompanies
    plantTimeZone: plantTimeZone
    eventSubscriptions: eventSubscriptions
    alertEmail: alertEmail
    zoneRedundant: zoneRedundant
    consoleClientId: consoleClientId
  }
}

output AZURE_RESOURCE_GROUP string = group.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output SERVICEBUS_NAMESPACE string = resources.outputs.serviceBusNamespace
output EVENTGRID_TOPIC_ENDPOINT string = resources.outputs.eventGridTopicEndpoint
output KEY_VAULT_NAME string = resources.outputs.keyVaultName
output WORKBOOK_URL string = resources.outputs.workbookUrl
output CONSOLE_URL string = resources.outputs.consoleUrl
