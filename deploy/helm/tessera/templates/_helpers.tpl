{{/* The chart's name. */}}
{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-<chart>, unless the release already names the chart. */}}
{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tessera.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: recognizer
{{- end }}

{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tessera.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: the GPU variant with gpu.enabled. */}}
{{- define "tessera.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.gpu.enabled }}
{{- $repository := default .Values.image.repository .Values.gpu.image.repository }}
{{- printf "%s:%s" $repository (default (printf "%s-gpu" $tag) .Values.gpu.image.tag) }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Where the chart puts things in the container. */}}
{{- define "tessera.configDir" -}}/etc/tessera{{- end }}
{{- define "tessera.headsDir" -}}/var/lib/tessera/heads{{- end }}
{{- define "tessera.kafkaTlsDir" -}}/etc/tessera/kafka-tls{{- end }}

{{/* tessera.toml: config, plus what the chart's switches imply. */}}
{{- define "tessera.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $kafka := default dict $config.kafka }}
{{- if .Values.kafka.tls.existingSecret }}
{{- $properties := default dict $kafka.properties }}
{{- $tlsDir := include "tessera.kafkaTlsDir" . }}
{{- $_ := set $properties "ssl.ca.location" (printf "%s/%s" $tlsDir .Values.kafka.tls.caKey) }}
{{- if and .Values.kafka.tls.certKey .Values.kafka.tls.keyKey }}
{{- $_ := set $properties "ssl.certificate.location" (printf "%s/%s" $tlsDir .Values.kafka.tls.certKey) }}
{{- $_ := set $properties "ssl.key.location" (printf "%s/%s" $tlsDir .Values.kafka.tls.keyKey) }}
{{- else if or .Values.kafka.tls.certKey .Values.kafka.tls.keyKey }}
{{- fail "kafka.tls: set both certKey and keyKey for mutual TLS, or neither" }}
{{- end }}
{{- $_ := set $kafka "properties" $properties }}
{{- end }}
{{- $_ := set $config "kafka" $kafka }}
{{- if .Values.gpu.enabled }}
{{- $model := default dict $config.model }}
{{- $session := default dict $model.session }}
{{- /* Helm reads every number as a float; tessera wants integer device ids. */}}
{{- $providers := list }}
{{- range .Values.gpu.executionProviders }}
{{- $provider := deepCopy . }}
{{- if hasKey $provider "device_id" }}
{{- $_ := set $provider "device_id" (int $provider.device_id) }}
{{- end }}
{{- $providers = append $providers $provider }}
{{- end }}
{{- $_ := set $session "execution_providers" $providers }}
{{- $_ := set $model "session" $session }}
{{- $_ := set $config "model" $model }}
{{- end }}
{{- if .Values.heads.persistence.enabled }}
{{- $heads := default dict $config.heads }}
{{- $_ := set $heads "dir" (include "tessera.headsDir" .) }}
{{- $_ := set $config "heads" $heads }}
{{- end }}
{{- toToml $config }}
{{- end }}

{{/* The HTTP port, from config.http.address (default 9464). */}}
{{- define "tessera.httpPort" -}}
{{- $address := "0.0.0.0:9464" }}
{{- if and .Values.config.http .Values.config.http.address }}
{{- $address = .Values.config.http.address }}
{{- end }}
{{- last (splitList ":" $address) }}
{{- end }}
