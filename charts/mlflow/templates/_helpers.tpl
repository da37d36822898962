{{/* Chart name, overridable. */}}
{{- define "mlflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, with the chart name appended unless it already holds it. */}}
{{- define "mlflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mlflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "server"). */}}
{{- define "mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object of one component: (dict "root" $ "component" "server"). */}}
{{- define "mlflow.labels" -}}
helm.sh/chart: {{ include "mlflow.chart" .root }}
{{ include "mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Name of one component's objects: (dict "root" $ "component" "postgres"). */}}
{{- define "mlflow.componentName" -}}
{{- printf "%s-%s" (include "mlflow.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "mlflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The one securityContext helper, for pods and containers alike, restricted Pod Security:
(dict "root" $ "level" "pod" "ids" .Values.server.ids) or (dict "root" $ "level" "container").
Fixed runAsUser/runAsGroup/fsGroup only where the platform lets workloads choose them:
OpenShift (global.openshift) assigns them per namespace and rejects others.
*/}}
{{- define "mlflow.securityContext" -}}
{{- if eq .level "pod" -}}
runAsNonRoot: true
{{- if and .ids (not .root.Values.global.openshift) }}
runAsUser: {{ .ids.runAsUser }}
runAsGroup: {{ .ids.runAsGroup }}
fsGroup: {{ .ids.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- else -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- end -}}

{{- define "mlflow.serverImage" -}}
{{- printf "%s:%s" .Values.server.image.repository (default .Chart.AppVersion .Values.server.image.tag) -}}
{{- end -}}

{{/* Services of the backing stores. */}}
{{- define "mlflow.postgresHost" -}}
{{- if eq .Values.database.mode "in-cluster" -}}
{{- printf "%s.%s.svc" (include "mlflow.componentName" (dict "root" . "component" "postgres")) .Release.Namespace -}}
{{- else -}}
{{- .Values.database.external.host -}}
{{- end -}}
{{- end -}}

{{- define "mlflow.postgresPort" -}}
{{- if eq .Values.database.mode "in-cluster" -}}5432{{- else -}}{{ .Values.database.external.port }}{{- end -}}
{{- end -}}

{{- define "mlflow.s3Endpoint" -}}
{{- if eq .Values.artifacts.mode "in-cluster" -}}
{{- printf "http://%s.%s.svc:8333" (include "mlflow.componentName" (dict "root" . "component" "objectstore")) .Release.Namespace -}}
{{- else if eq .Values.artifacts.mode "s3" -}}
{{- .Values.artifacts.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{/* Where the server keeps artifacts (--artifacts-destination). */}}
{{- define "mlflow.artifactsDestination" -}}
{{- $path := ternary "" (printf "/%s" .Values.artifacts.path) (empty .Values.artifacts.path) -}}
{{- if has .Values.artifacts.mode (list "in-cluster" "s3") -}}
{{- printf "s3://%s%s" .Values.artifacts.bucket $path -}}
{{- else if eq .Values.artifacts.mode "gcs" -}}
{{- printf "gs://%s%s" .Values.artifacts.bucket $path -}}
{{- else -}}
{{- printf "wasbs://%s@%s.blob.core.windows.net%s" .Values.artifacts.bucket .Values.artifacts.azure.storageAccount $path -}}
{{- end -}}
{{- end -}}

{{/*
Environment shared by the server and the migration Job: the backend store URI is put
together from the password Secret by Kubernetes' $(VAR) expansion, so it never sits in a
value or a ConfigMap.
*/}}
{{- define "mlflow.databaseEnv" -}}
- name: MLFLOW_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.passwordKey }}
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql://%s:$(MLFLOW_DB_PASSWORD)@%s:%s/%s%s" .Values.database.user (include "mlflow.postgresHost" .) (include "mlflow.postgresPort" .) .Values.database.name (ternary "" (printf "?sslmode=%s" .Values.database.external.sslMode) (eq .Values.database.mode "in-cluster")) | quote }}
{{- end -}}

{{/*
Host headers the server answers (MLflow's DNS-rebinding guard replaces its defaults, localhost
and private IP patterns, with this list), every entry exact: a pattern such as 10.* also
matches 10.attacker.example. The Service's in-cluster names, with and without its port; the
Route/Ingress host; localhost with and without the server port (the probes send localhost);
the pod's own IP with the server port, which Prometheus scrapes by ($(POD_IP), set by the
kubelet from the downward API).
*/}}
{{- define "mlflow.allowedHosts" -}}
{{- if .Values.server.allowedHosts -}}
{{- join "," .Values.server.allowedHosts -}}
{{- else -}}
{{- $svc := include "mlflow.fullname" . -}}
{{- $hosts := list -}}
{{- range $name := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $hosts = concat $hosts (list $name (printf "%s:%v" $name $.Values.service.port)) -}}
{{- end -}}
{{- with .Values.route.host }}{{ if $.Values.route.enabled }}{{ $hosts = append $hosts . }}{{ end }}{{ end -}}
{{- with .Values.ingress.host }}{{ if $.Values.ingress.enabled }}{{ $hosts = append $hosts . }}{{ end }}{{ end -}}
{{- $hosts = concat $hosts (list "localhost" (printf "localhost:%v" .Values.server.port) (printf "$(POD_IP):%v" .Values.server.port)) -}}
{{- join "," $hosts -}}
{{- end -}}
{{- end -}}
