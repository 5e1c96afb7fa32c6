{{/*
The namespace cairn runs in.
*/}}
{{- define "cairn.namespace" -}}
{{- required "namespace.name is required" .Values.namespace.name -}}
{{- end -}}

{{/*
The cairn image: repository:tag.
*/}}
{{- define "cairn.image" -}}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) (required "image.tag is required" .Values.image.tag) -}}
{{- end -}}

{{/*
The image of the backup and restore Jobs: agent.image, else the cairn image.
*/}}
{{- define "cairn.agentImage" -}}
{{- .Values.agent.image | default (include "cairn.image" .) -}}
{{- end -}}

{{/*
The pod security context every cairn pod runs with (restricted Pod Security Standard).
*/}}
{{- define "cairn.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65534
  runAsGroup: 65534
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/*
The container security context every cairn container runs with.
*/}}
{{- define "cairn.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end -}}
