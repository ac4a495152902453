{{/*
Names. Kubernetes names (and label values) are at most 63 characters: every name is cut
there and a trailing "-" removed, component suffixes included.
*/}}
{{- define "modgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modgate.fullname" -}}
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

{{/* A component's name: fullname-component, cut at 63. Call with (list $ "gateway"). */}}
{{- define "modgate.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "modgate.fullname" $root | trunc 52 | trimSuffix "-") (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modgate.secretName" -}}
{{- include "modgate.componentName" (list . "secrets") -}}
{{- end -}}

{{- define "modgate.configName" -}}
{{- include "modgate.componentName" (list . "config") -}}
{{- end -}}

{{- define "modgate.routesName" -}}
{{- include "modgate.componentName" (list . "routes") -}}
{{- end -}}

{{/* Labels. Call with (list $ "component"). */}}
{{- define "modgate.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "modgate.chart" $root }}
{{ include "modgate.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: modgate
{{- end -}}

{{- define "modgate.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "modgate.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "modgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Security contexts: fixed, not values. The image runs as uid 10001 and needs no capability,
no privilege and no writable root (only /tmp, an emptyDir).
*/}}
{{- define "modgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "modgate.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* preStop hook: sleep N seconds (exec, /bin/sleep is in python-slim). */}}
{{- define "modgate.preStop" -}}
preStop:
  exec:
    command: ["sleep", {{ . | toString | quote }}]
{{- end -}}

{{/*
Invariant: the grace period outlasts preStop + the app's own drain, so in-flight requests
finish before SIGKILL. Call with (dict "root" $ "what" "gateway" "tgp" N "preStop" N).
*/}}
{{- define "modgate.checkGrace" -}}
{{- $drain := .root.Values.config.shutdown_grace_seconds | default 15 | float64 -}}
{{- $need := addf .preStop $drain -}}
{{- if le (float64 .tgp) $need -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must exceed %s.preStopSleepSeconds (%v) + config.shutdown_grace_seconds (%v)" .what .tgp .what .preStop $drain) -}}
{{- end -}}
{{- end -}}

{{/* Secrets: the env entries for the secrets that are set. */}}
{{- define "modgate.secretEnvMap" -}}
databaseUrl: MODGATE_DATABASE_URL
redisUrl: MODGATE_REDIS_URL
jwtSecret: MODGATE_JWT_SECRET
jwtPublicKey: MODGATE_JWT_PUBLIC_KEY
executorToken: MODGATE_EXECUTOR_TOKEN
secretsKey: MODGATE_SECRETS_KEY
{{- end -}}

{{/* Fails on a secret with both value and existingSecret; true when any value is set. */}}
{{- define "modgate.createsSecret" -}}
{{- $creates := false -}}
{{- range $name, $s := .Values.secrets -}}
{{- if and $s.value $s.existingSecret -}}
{{- fail (printf "secrets.%s: set value or existingSecret, not both" $name) -}}
{{- end -}}
{{- if $s.value -}}{{- $creates = true -}}{{- end -}}
{{- end -}}
{{- if $creates -}}true{{- end -}}
{{- end -}}

{{/*
Env entries for secrets. Call with (dict "root" $ "only" (list "databaseUrl") "secretName" NAME);
"only" empty = all; "secretName" overrides the chart Secret's name (the migrations hook copy).
*/}}
{{- define "modgate.secretEnv" -}}
{{- $root := .root -}}
{{- $chartSecret := default (include "modgate.secretName" $root) .secretName -}}
{{- $envs := include "modgate.secretEnvMap" $root | fromYaml -}}
{{- range $name := list "databaseUrl" "redisUrl" "jwtSecret" "jwtPublicKey" "executorToken" "secretsKey" -}}
{{- $s := index $root.Values.secrets $name -}}
{{- if and (or (empty $.only) (has $name $.only)) (or $s.value $s.existingSecret) }}
- name: {{ index $envs $name }}
  valueFrom:
    secretKeyRef:
      name: {{ default $chartSecret $s.existingSecret }}
      key: {{ $s.key }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Topology spread constraints with the component's labelSelector filled in. (list $ "gateway" LIST) */}}
{{- define "modgate.topologySpread" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- range $c := index . 2 }}
{{- $sel := dict "labelSelector" (dict "matchLabels" (include "modgate.selectorLabels" (list $root $component) | fromYaml)) }}
- {{- merge (deepCopy $c) $sel | toYaml | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "modgate.executorUrl" -}}
{{- printf "http://%s:%v" (include "modgate.componentName" (list . "executor")) .Values.executor.service.port -}}
{{- end -}}

{{/* PDB budget: maxUnavailable when set, else minAvailable (default 1). */}}
{{- define "modgate.pdbSpec" -}}
{{- if and (not (kindIs "invalid" .Values.pdb.minAvailable)) (not (kindIs "invalid" .Values.pdb.maxUnavailable)) -}}
{{- fail "pdb: set minAvailable or maxUnavailable, not both" -}}
{{- end -}}
{{- if not (kindIs "invalid" .Values.pdb.maxUnavailable) -}}
maxUnavailable: {{ .Values.pdb.maxUnavailable }}
{{- else -}}
minAvailable: {{ .Values.pdb.minAvailable | default 1 }}
{{- end -}}
{{- end -}}

{{/* The NetworkPolicy peer for Prometheus. */}}
{{- define "modgate.prometheusPeer" -}}
{{- $p := .Values.networkPolicy.prometheus -}}
- namespaceSelector:
    {{- toYaml $p.namespaceSelector | nindent 4 }}
  {{- with $p.podSelector }}
  podSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
