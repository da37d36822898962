"""Checks for the ML services' settings (the modules live in mlplatform.modules.ml_services)."""
