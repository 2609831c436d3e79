{{- define "edgehub.name" -}}
{{- default .Chart.Name .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edgehub.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "edgehub.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The config file's text: configFile as given (--set-file configFile=manifest.json), else config. */}}
{{- define "edgehub.configText" -}}
{{- if .Values.configFile -}}{{ .Values.configFile }}{{- else -}}{{ .Values.config | toJson }}{{- end -}}
{{- end -}}
