{{/*
modgate as a sidecar in a module's own pod: `mode: sidecar` serves one module on every path
and forwards to the module's app on localhost. For module charts that depend on this chart
(named templates of a dependency are global); see README.md.

The templates take one dict and read nothing else (not .Values: in a parent chart .Values is
the parent's):
  moduleId       (required) the module id or name (MODGATE_SIDECAR_MODULE)
  upstreamPort   (required) the app's port on localhost
  image          (required) the modgate image, "repo:tag"
  port           sidecar public port (default 8080); admin port: adminPort (default 9090)
  configMap      a ConfigMap with gateway.yaml (and routes.yaml) mounted at /etc/modgate
  routes         true when configMap holds routes.yaml (embedded mode: MODGATE_ROUTES_FILE)
  env            extra EnvVar entries (e.g. MODGATE_DATABASE_URL from your Secret)
  envFrom        extra EnvFromSource entries
  resources      container resources (default: 100m / 128Mi, limit 256Mi)
  preStopSeconds preStop sleep (default 5)
  pullPolicy     image pull policy (default IfNotPresent)

  containers:
    - name: app
      ...
    {{- include "modgate.sidecarContainer" (dict "moduleId" "crm" "upstreamPort" 8000 "image" "ghcr.io/modgate/modgate:0.1.0") | nindent 4 }}
  volumes:
    {{- include "modgate.sidecarVolumes" (dict "configMap" "crm-modgate") | nindent 4 }}

The upstream is the module's `upstream` in the routes (embedded routes.yaml or Postgres):
point it at http://127.0.0.1:<upstreamPort>; "modgate.sidecarRoutes" renders such a manifest.
*/}}
{{- define "modgate.sidecarContainer" -}}
{{- $moduleId := required "modgate.sidecarContainer: moduleId is required" .moduleId -}}
{{- $upstreamPort := required "modgate.sidecarContainer: upstreamPort is required" .upstreamPort | int -}}
{{- $image := required "modgate.sidecarContainer: image is required" .image -}}
{{- $port := .port | default 8080 | int -}}
{{- $adminPort := .adminPort | default 9090 | int -}}
{{- if or (eq $upstreamPort $port) (eq $upstreamPort $adminPort) -}}
{{- fail (printf "modgate.sidecarContainer: upstreamPort %d collides with the sidecar's ports %d/%d" $upstreamPort $port $adminPort) -}}
{{- end -}}
- name: modgate
  image: {{ $image | quote }}
  imagePullPolicy: {{ .pullPolicy | default "IfNotPresent" }}
  args: ["serve"]
  ports:
    - name: http-modgate
      containerPort: {{ $port }}
      protocol: TCP
    - name: admin-modgate
      containerPort: {{ $adminPort }}
      protocol: TCP
  env:
    - name: MODGATE_MODE
      value: sidecar
    - name: MODGATE_SIDECAR_MODULE
      value: {{ $moduleId | quote }}
    - name: MODGATE_LISTEN
      value: "0.0.0.0:{{ $port }}"
    - name: MODGATE_ADMIN_LISTEN
      value: "0.0.0.0:{{ $adminPort }}"
    {{- if .configMap }}
    - name: MODGATE_CONFIG
      value: /etc/modgate/gateway.yaml
    {{- if .routes }}
    - name: MODGATE_ROUTES_FILE
      value: /etc/modgate/routes.yaml
    {{- end }}
    {{- end }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin-modgate
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin-modgate
    periodSeconds: 5
    timeoutSeconds: 3
    failureThreshold: 2
  lifecycle:
    {{- include "modgate.preStop" (.preStopSeconds | default 5) | nindent 4 }}
  resources:
    {{- toYaml (.resources | default (dict "requests" (dict "cpu" "100m" "memory" "128Mi") "limits" (dict "memory" "256Mi"))) | nindent 4 }}
  securityContext:
    {{- include "modgate.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: modgate-tmp
      mountPath: /tmp
    {{- if .configMap }}
    - name: modgate-config
      mountPath: /etc/modgate
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The sidecar's volumes: /tmp and, with configMap, its settings. Same dict. */}}
{{- define "modgate.sidecarVolumes" -}}
- name: modgate-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .configMap }}
- name: modgate-config
  configMap:
    name: {{ .configMap }}
{{- end }}
{{- end -}}

{{/*
A routes manifest for a sidecar: one module whose upstream is the app on localhost.
(dict "moduleId" ID "moduleName" NAME "upstreamPort" N "routes" LIST)
*/}}
{{- define "modgate.sidecarRoutes" -}}
{{- $module := dict "id" .moduleId "upstream" (printf "http://127.0.0.1:%d" (.upstreamPort | int)) "routes" (.routes | default list) -}}
{{- if .moduleName }}{{- $_ := set $module "name" .moduleName -}}{{- end -}}
{{- toYaml (dict "modules" (list $module)) -}}
{{- end -}}
