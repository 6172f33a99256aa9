{{/* Names, labels and the shared pieces of the two Deployments. */}}

{{- define "codeq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codeq.fullname" -}}
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

{{- define "codeq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "codeq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "codeq.selector" -}}
app.kubernetes.io/name: {{ include "codeq.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "codeq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "codeq.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "codeq.secretName" -}}
{{- default (printf "%s-secrets" (include "codeq.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "codeq.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The store address the pods use: the in-chart KVRocks, or the external one. */}}
{{- define "codeq.redisAddr" -}}
{{- if .Values.kvrocks.enabled -}}
{{- if .Values.externalRedis.addr -}}
{{- fail "externalRedis.addr is set but so is kvrocks.enabled: set kvrocks.enabled=false to use the external store" -}}
{{- end -}}
{{- if .Values.config.redisCluster -}}
{{- fail "config.redisCluster needs a Redis/KVRocks cluster: the in-chart KVRocks is one node (kvrocks.enabled=false, externalRedis.addr)" -}}
{{- end -}}
{{- printf "%s-kvrocks:%d" (include "codeq.fullname" .) (int .Values.kvrocks.port) -}}
{{- else -}}
{{- required "externalRedis.addr is required when kvrocks.enabled is false" .Values.externalRedis.addr -}}
{{- end -}}
{{- end -}}

{{/* Whether the in-chart KVRocks requires REDIS_PASSWORD ("true" or ""). */}}
{{- define "codeq.kvrocksAuth" -}}
{{- if and .Values.kvrocks.enabled .Values.kvrocks.auth.enabled -}}true{{- end -}}
{{- end -}}

{{/* The settings file: values.config plus what the chart decides. No secrets. */}}
{{- define "codeq.config" -}}
{{- $fixed := dict "host" "0.0.0.0" "port" (int .Values.gateway.port) "redisAddr" (include "codeq.redisAddr" .) "localArtifactsDir" "/var/lib/codeq/artifacts" -}}
{{- toYaml (merge $fixed (deepCopy .Values.config)) -}}
{{- end -}}

{{/* A codeQ container: image, config, secrets, security; `args` differ per component. */}}
{{- define "codeq.container" -}}
- name: {{ .component }}
  image: {{ include "codeq.image" .root | quote }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args: {{ toJson .args }}
  env:
    - name: CODEQ_CONFIG_PATH
      value: /etc/codeq/config.yaml
    {{- with .values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  envFrom:
    - secretRef:
        name: {{ include "codeq.secretName" .root }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .values.resources | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/codeq
      readOnly: true
    - name: tmp
      mountPath: /tmp
    - name: artifacts
      mountPath: /var/lib/codeq/artifacts
{{- end -}}

{{- define "codeq.podSpec" -}}
serviceAccountName: {{ include "codeq.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- /* SIGTERM comes after the preStop pause; then the process has shutdownGraceSeconds. */}}
terminationGracePeriodSeconds: {{ add (int (default 20 .root.Values.config.shutdownGraceSeconds)) (int (default 0 .values.preStopSleepSeconds)) 10 }}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .root.Values.topologySpread.maxSkew }}
    topologyKey: {{ .root.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "codeq.selector" . | nindent 8 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "codeq.fullname" .root }}-config
  - name: tmp
    emptyDir: {}
  - name: artifacts
    {{- with .root.Values.artifacts.existingClaim }}
    persistentVolumeClaim:
      claimName: {{ . }}
    {{- else }}
    emptyDir: {}
    {{- end }}
{{- end -}}
