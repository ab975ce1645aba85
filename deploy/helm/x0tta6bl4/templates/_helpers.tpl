{{/* Chart name, truncated to a DNS label. */}}
{{- define "x0tta6bl4.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name, short enough for pod names with an ordinal. */}}
{{- define "x0tta6bl4.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the node pods (also used by deploy/chaos-mesh). */}}
{{- define "x0tta6bl4.selectorLabels" -}}
app.kubernetes.io/name: {{ include "x0tta6bl4.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{/* Labels of every object. `part-of: x0tta6bl4` is the ServiceMonitor's jobLabel, so the
     scrape job is `x0tta6bl4` whatever the release is called (the rules expect it). */}}
{{- define "x0tta6bl4.labels" -}}
{{ include "x0tta6bl4.selectorLabels" . }}
app.kubernetes.io/part-of: x0tta6bl4
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "x0tta6bl4.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The headless Service that gives StatefulSet pods their DNS names. */}}
{{- define "x0tta6bl4.meshService" -}}
{{- printf "%s-mesh" (include "x0tta6bl4.fullname" .) -}}
{{- end -}}

{{/* host:port, with brackets around an IPv6 host. */}}
{{- define "x0tta6bl4.hostPort" -}}
{{- $host := index . 0 -}}
{{- if contains ":" $host -}}[{{ $host }}]:{{ index . 1 }}{{- else -}}{{ $host }}:{{ index . 1 }}{{- end -}}
{{- end -}}

{{/* Probe-flow targets: the StatefulSet's seed pods (node.flows.toSeeds), then
node.flows.targets. */}}
{{- define "x0tta6bl4.flowTargets" -}}
{{- $targets := list -}}
{{- if and .Values.node.flows.toSeeds (eq .Values.kind "StatefulSet") -}}
{{- $seeds := min (int .Values.node.seedPeers) (int .Values.replicas) -}}
{{- range $i := until (int $seeds) -}}
{{- $targets = append $targets (printf "%s-%d" (include "x0tta6bl4.fullname" $) $i) -}}
{{- end -}}
{{- end -}}
{{- range .Values.node.flows.targets -}}
{{- $targets = append $targets . -}}
{{- end -}}
{{- toJson (uniq $targets) -}}
{{- end -}}

{{/* Static peers: the StatefulSet's seed pods by DNS name, then node.peers. */}}
{{- define "x0tta6bl4.peers" -}}
{{- $peers := list -}}
{{- if eq .Values.kind "StatefulSet" -}}
{{- $seeds := min (int .Values.node.seedPeers) (int .Values.replicas) -}}
{{- range $i := until (int $seeds) -}}
{{- $host := printf "%s-%d.%s.%s.svc.%s" (include "x0tta6bl4.fullname" $) $i (include "x0tta6bl4.meshService" $) $.Release.Namespace $.Values.clusterDomain -}}
{{- $peers = append $peers (printf "%s:%d" $host (int $.Values.ports.mesh)) -}}
{{- end -}}
{{- end -}}
{{- range .Values.node.peers -}}
{{- $peers = append $peers . -}}
{{- end -}}
{{- toJson $peers -}}
{{- end -}}

{{/* A TOML value: booleans and strings as such, whole numbers without a fraction (Helm
     reads every number as a float). */}}
{{- define "x0tta6bl4.tomlValue" -}}
{{- if kindIs "bool" . -}}
{{- . -}}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- if eq (float64 .) (floor (float64 .)) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{- define "x0tta6bl4.caSecretName" -}}
{{- default (printf "%s-ca" (include "x0tta6bl4.fullname" .)) .Values.identity.caSecret.name -}}
{{- end -}}

{{- define "x0tta6bl4.joinTokenSecretName" -}}
{{- default (printf "%s-join-token" (include "x0tta6bl4.fullname" .)) .Values.identity.joinToken.existingSecret -}}
{{- end -}}

{{/* X0TTA6BL4_NODE_NAME: the node's name in its SVID (the pod name of a StatefulSet, the
     Kubernetes node name of a DaemonSet). */}}
{{- define "x0tta6bl4.nodeNameEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: X0TTA6BL4_NODE_NAME
  value: {{ if eq .Values.kind "StatefulSet" }}$(POD_NAME){{ else }}$(K8S_NODE_NAME){{ end }}
{{- end -}}

{{- define "x0tta6bl4.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}
