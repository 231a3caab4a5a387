{{/* The release name is the resources' name: `helm install enclave-engine` gives the Service enclave-engine. */}}
{{- define "enclave.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "enclave.selectorLabels" -}}
app.kubernetes.io/name: enclave
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.role }}
{{- end -}}

{{- define "enclave.labels" -}}
{{ include "enclave.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Fails the render on an unknown role or a role missing what it needs. */}}
{{- define "enclave.validate" -}}
{{- if not (has .Values.role (list "all-in-one" "engine" "gateway")) -}}
{{- fail (printf "role must be all-in-one, engine or gateway, not %q" .Values.role) -}}
{{- end -}}
{{- if and (ne .Values.role "all-in-one") (not .Values.secrets.existingSecret) -}}
{{- fail (printf "role %s needs secrets.existingSecret: the Secret holding %s, the key between gateway and engine" .Values.role .Values.secrets.engineApiKeyKey) -}}
{{- end -}}
{{- if and (eq .Values.role "gateway") (not .Values.upstream.url) -}}
{{- fail "role gateway needs upstream.url: the engine Service, e.g. http://enclave-engine:8000" -}}
{{- end -}}
{{- if and (ne .Values.role "gateway") (not .Values.models) -}}
{{- fail (printf "role %s needs at least one entry in models" .Values.role) -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (ne .Values.role "engine") (not .Values.database.existingSecret) -}}
{{- fail "more than one gateway replica needs database.existingSecret (PostgreSQL): SQLite on a volume serves one pod" -}}
{{- end -}}
{{- end -}}
