"""MLflow: the rules of its settings (its ComponentResource is mlplatform.modules.mlflow)."""
