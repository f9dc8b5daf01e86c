"""F&O: tokens, the client (the one place that retries and paces), OData literals, the HTTP session,
reading a production order."""
