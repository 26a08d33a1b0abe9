"""Users, roles and scopes, the audit log, encrypted credentials, API tokens and live events."""
