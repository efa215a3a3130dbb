"""Authentication (OAuth2 client credentials, external issuers) and authorisation (SMART scopes)."""
