{{/* Chart name, truncated to a DNS label. */}}
{{- define "twin-study.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name, short enough for Job names with a suffix and pod names
     with an index and a random tail. */}}
{{- define "twin-study.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "twin-study.labels" -}}
app.kubernetes.io/name: {{ include "twin-study.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: x0tta6bl4
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "twin-study.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "twin-study.claim" -}}
{{- default (printf "%s-parts" (include "twin-study.fullname" .)) .Values.storage.existingClaim -}}
{{- end -}}

{{/* Where this study's parts and report live: one directory per release and study
     (a digest of the study flags, the shard count and the image), so a release name
     reused on a kept claim never mixes its parts with another study's. */}}
{{- define "twin-study.dir" -}}
{{- $identity := dict "study" .Values.study "shards" .Values.shards "image" (include "twin-study.image" .) -}}
{{- printf "/study/%s-%s" .Release.Name ($identity | toJson | sha256sum | trunc 10) -}}
{{- end -}}

{{/* The pod-level security context: the image's user, restricted Pod Security. */}}
{{- define "twin-study.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "twin-study.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Scheduling and pull settings shared by both Jobs' pods. */}}
{{- define "twin-study.podCommon" -}}
restartPolicy: Never
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "twin-study.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: study
    persistentVolumeClaim:
      claimName: {{ include "twin-study.claim" . }}
{{- end -}}

{{/* The flags that define the study: the same for every shard (the merge checks). */}}
{{- define "twin-study.studyArgs" -}}
{{- $s := .Values.study -}}
- --topology
- {{ $s.topology | quote }}
- --nodes
- {{ int $s.nodes | quote }}
- --scenario
- {{ $s.scenario | quote }}
- --iterations
- {{ int $s.iterations | quote }}
- --seed
- {{ int64 $s.seed | quote }}
- --flows
- {{ int $s.flows | quote }}
- --probe-interval-ms
- {{ int $s.probeIntervalMs | quote }}
- --probe-misses
- {{ int $s.probeMisses | quote }}
- --start
- {{ $s.start | quote }}
{{- end -}}
