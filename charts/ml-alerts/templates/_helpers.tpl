{{/* Chart name, at most 63 characters. */}}
{{- define "ml-alerts.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name: the release name alone when it already holds the chart name. */}}
{{- define "ml-alerts.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "ml-alerts.labels" -}}
app.kubernetes.io/name: {{ include "ml-alerts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- range $key, $value := .Values.commonLabels }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Labels of a PrometheusRule: the common ones and those a Prometheus selects rules by. */}}
{{- define "ml-alerts.ruleLabels" -}}
{{ include "ml-alerts.labels" . }}
{{- range $key, $value := .Values.ruleLabels }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Extra labels of every alert (indented by the caller). */}}
{{- define "ml-alerts.alertLabels" -}}
{{- range $key, $value := .Values.alertLabels }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* runbook_url of an alert: (list $ "AlertName") -> <runbookBaseUrl>#alertname */}}
{{- define "ml-alerts.runbook" -}}
{{- $root := index . 0 -}}
{{- printf "%s#%s" $root.Values.runbookBaseUrl (index . 1 | lower) | quote -}}
{{- end -}}
