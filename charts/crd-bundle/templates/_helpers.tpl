{{/* The chart's name. */}}
{{- define "crd-bundle.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where a CRD's definition is: the chart's file files/<name>.yaml. */}}
{{- define "crd-bundle.file" -}}
{{- printf "files/%s.yaml" .name -}}
{{- end -}}
