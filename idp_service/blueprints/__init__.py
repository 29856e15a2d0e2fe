"""HTTP surfaces of the service, one blueprint each (health, agent, login, saml, scim, admin)."""
