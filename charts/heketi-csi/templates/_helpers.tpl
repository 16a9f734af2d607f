{{/* Prefix of every object name: "heketi-csi" unless overridden. */}}
{{- define "heketi-csi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: k8s/base's part-of plus Helm's bookkeeping. */}}
{{- define "heketi-csi.labels" -}}
app.kubernetes.io/part-of: heketi-csi
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "heketi-csi.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "heketi-csi.logArgs" -}}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
{{- end -}}

{{/* Secret data key `key` and the Secret's name, for the default backend and each backend. */}}
{{- define "heketi-csi.secretParameters" -}}
{{- $name := .name -}}
{{- $ns := .namespace -}}
{{- range list "provisioner" "controller-publish" "controller-expand" }}
csi.storage.k8s.io/{{ . }}-secret-name: {{ $name }}
csi.storage.k8s.io/{{ . }}-secret-namespace: {{ $ns }}
{{- end }}
{{- end -}}

{{- define "heketi-csi.sidecarSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
