"""Team tenancy: namespaces, quotas, limits, RBAC and isolation per team."""
