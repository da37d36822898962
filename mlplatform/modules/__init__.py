"""One ComponentResource per capability, composed in dependency order by the registry."""
