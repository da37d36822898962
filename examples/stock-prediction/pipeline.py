"""Stock prediction: generate data -> features -> train -> evaluate (publishing the model's
accuracy and drift for the model alerts) -> when good enough, register the model in MLflow and
serve that registered version with KServe.

Compile it to the pipeline YAML Kubeflow Pipelines runs:

    python examples/stock-prediction/pipeline.py stock-prediction.yaml

Upload the YAML through the Pipelines UI or `kfp.Client(host=<api endpoint>)`. Before the
first run: an MLflow account for the pipeline in Secret `mlflow-pipeline-credentials` of
namespace `kubeflow`, and the serving team's admin applies `deploy-rbac.yaml` so the run may
deploy into the team's namespace (see README.md).
"""

import sys
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import Dataset, Input, Metrics, Model, Output

BASE_IMAGE = "python:3.11-slim"
ML_PACKAGES = ["pandas==2.2.3", "scikit-learn==1.5.2", "joblib==1.4.2"]
MLFLOW_PACKAGE = "mlflow==3.18.0"
# The Secret (in `kubeflow`, where single-user KFP runs its steps) with the MLflow account the
# pipeline registers models as: keys `username` and `password`.
MLFLOW_CREDENTIALS = "mlflow-pipeline-credentials"
# The monitoring module's model metrics gateway (its default namespace, monitoring).
MODEL_METRICS_GATEWAY = "http://model-metrics.monitoring.svc:9091"


@dsl.component(base_image=BASE_IMAGE, packages_to_install=ML_PACKAGES)
def generate_prices(days: int, seed: int, prices: Output[Dataset]) -> None:
    """A synthetic daily price series: a random walk with drift."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0005, 0.01, size=days)
    close = 100 * np.exp(np.cumsum(returns))
    pd.DataFrame({"day": range(days), "close": close}).to_csv(prices.path, index=False)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=ML_PACKAGES)
def build_features(prices: Input[Dataset], window: int, features: Output[Dataset]) -> None:
    """Lagged returns and a moving average; the label is tomorrow's direction."""
    import pandas as pd

    frame = pd.read_csv(prices.path)
    frame["return"] = frame["close"].pct_change()
    for lag in range(1, window + 1):
        frame[f"lag_{lag}"] = frame["return"].shift(lag)
    frame["moving_average"] = frame["close"].rolling(window).mean() / frame["close"] - 1
    frame["label"] = (frame["return"].shift(-1) > 0).astype(int)
    frame.dropna().to_csv(features.path, index=False)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=ML_PACKAGES)
def train(features: Input[Dataset], n_estimators: int, max_depth: int, model: Output[Model]) -> None:
    import joblib
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    frame = pd.read_csv(features.path)
    train_rows = frame.iloc[: int(len(frame) * 0.8)]
    x = train_rows.drop(columns=["label", "day", "close", "return"])
    classifier = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=0)
    classifier.fit(x, train_rows["label"])
    joblib.dump(classifier, model.path)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=ML_PACKAGES)
def evaluate(features: Input[Dataset], model: Input[Model], metrics: Output[Metrics]) -> NamedTuple(
    "Quality", [("accuracy", float), ("drift", float)]
):
    """Accuracy on the held-out days, and drift: the population stability index of the
    model's scores on those days against its scores on the days it was trained on."""
    from collections import namedtuple

    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.metrics import accuracy_score

    frame = pd.read_csv(features.path)
    split = int(len(frame) * 0.8)
    columns = ["label", "day", "close", "return"]
    classifier = joblib.load(model.path)
    train_scores = classifier.predict_proba(frame.iloc[:split].drop(columns=columns))[:, 1]
    test_rows = frame.iloc[split:]
    test_scores = classifier.predict_proba(test_rows.drop(columns=columns))[:, 1]
    accuracy = float(accuracy_score(test_rows["label"], (test_scores >= 0.5).astype(int)))
    edges = np.quantile(train_scores, np.linspace(0, 1, 11))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(train_scores, edges)[0] / len(train_scores) + 1e-6
    actual = np.histogram(test_scores, edges)[0] / len(test_scores) + 1e-6
    drift = float(np.sum((actual - expected) * np.log(actual / expected)))
    metrics.log_metric("accuracy", accuracy)
    metrics.log_metric("drift", drift)
    return namedtuple("Quality", ["accuracy", "drift"])(accuracy, drift)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=["prometheus-client==0.21.1"])
def publish_quality(accuracy: float, drift: float, model_name: str, namespace: str, gateway: str) -> None:
    """Push the model's quality to the platform's model metrics gateway, where the model alerts
    (ModelAccuracyLow, ModelDriftHigh) read it; the next evaluation replaces it."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    Gauge("model_accuracy", "Accuracy of the model on its latest evaluation (0..1).", registry=registry).set(accuracy)
    Gauge(
        "model_drift_score",
        "Population stability index of the model's scores: latest evaluation against training.",
        registry=registry,
    ).set(drift)
    push_to_gateway(
        gateway, job="model-quality", grouping_key={"model": model_name, "namespace": namespace}, registry=registry
    )


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[*ML_PACKAGES, MLFLOW_PACKAGE])
def register(model: Input[Model], accuracy: float, drift: float, name: str) -> str:
    """Log the trained model to MLflow (at MLFLOW_TRACKING_URI, as MLFLOW_TRACKING_USERNAME)
    and register it as a new version of `name`; returns the version."""
    import joblib
    import mlflow
    import mlflow.sklearn

    mlflow.set_experiment(name)
    with mlflow.start_run():
        mlflow.log_metrics({"accuracy": accuracy, "drift": drift})
        info = mlflow.sklearn.log_model(joblib.load(model.path), name="model", registered_model_name=name)
    return str(info.registered_model_version)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[MLFLOW_PACKAGE, "kubernetes==31.0.0"])
def deploy(name: str, version: str, namespace: str) -> None:
    """Serve a registered model version from the registry's artifact store: the team's
    `mlflow` ConfigMap names the store behind `mlflow-artifacts:/`, and its `mlflow-models`
    service account holds what KServe's storage initializer reads the store with."""
    from kubernetes import client, config
    from mlflow import MlflowClient

    config.load_incluster_config()
    team = client.CoreV1Api().read_namespaced_config_map("mlflow", namespace).data
    source = MlflowClient().get_model_version_download_uri(name, version)
    prefix = "mlflow-artifacts:/"
    if not source.startswith(prefix):
        raise ValueError(f"{name} v{version} is stored at {source}, not in the registry's artifact store")
    storage_uri = team["MLFLOW_ARTIFACT_STORE"].rstrip("/") + "/" + source[len(prefix) :].lstrip("/")
    body = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": {"mlflow.org/model-version": version}},
        "spec": {
            "predictor": {
                "serviceAccountName": team["MLFLOW_MODELS_SERVICE_ACCOUNT"],
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri},
            }
        },
    }
    api = client.CustomObjectsApi()
    try:
        api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        api.patch_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", name, body)


@dsl.pipeline(name="stock-prediction", description="Train a next-day direction model; deploy it when accurate enough.")
def stock_prediction(
    days: int = 1000,
    seed: int = 7,
    window: int = 5,
    n_estimators: int = 200,
    max_depth: int = 6,
    min_accuracy: float = 0.55,
    serving_namespace: str = "team-analytics",
    metrics_gateway: str = MODEL_METRICS_GATEWAY,
) -> None:
    prices = generate_prices(days=days, seed=seed)
    features = build_features(prices=prices.outputs["prices"], window=window)
    model = train(features=features.outputs["features"], n_estimators=n_estimators, max_depth=max_depth)
    for task in (prices, features, model):
        task.set_cpu_request("500m").set_cpu_limit("1").set_memory_request("512Mi").set_memory_limit("1Gi")
    scored = evaluate(features=features.outputs["features"], model=model.outputs["model"])
    publish_quality(
        accuracy=scored.outputs["accuracy"],
        drift=scored.outputs["drift"],
        model_name="stock-prediction",
        namespace=serving_namespace,
        gateway=metrics_gateway,
    )
    with dsl.If(scored.outputs["accuracy"] >= min_accuracy, name="accurate-enough"):
        registered = register(
            model=model.outputs["model"],
            accuracy=scored.outputs["accuracy"],
            drift=scored.outputs["drift"],
            name="stock-prediction",
        )
        deployed = deploy(name="stock-prediction", version=registered.output, namespace=serving_namespace)
        for task in (registered, deployed):
            # MLflow's address from the platform's ConfigMap in `kubeflow`, where the steps run.
            kubernetes.use_config_map_as_env(
                task, config_map_name="mlflow", config_map_key_to_env={"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}
            )
            # The MLflow account the pipeline logs as (auth: basic), from a Secret in `kubeflow`.
            kubernetes.use_secret_as_env(
                task,
                secret_name=MLFLOW_CREDENTIALS,
                secret_key_to_env={"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
            )


if __name__ == "__main__":
    compiler.Compiler().compile(stock_prediction, sys.argv[1] if len(sys.argv) > 1 else "stock-prediction.yaml")
