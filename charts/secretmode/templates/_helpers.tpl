{{/* Names and labels shared by every template. */}}

{{- define "secretmode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "secretmode.fullname" -}}
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

{{- define "secretmode.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "secretmode.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "secretmode.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secretmode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Label that keeps the webhook's own pods (and its Jobs) out of its objectSelector. */}}
{{- define "secretmode.excludeLabel" -}}
secretmode.io/component: webhook
{{- end -}}

{{- define "secretmode.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "secretmode.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repo@digest when a digest is set, else repo:tag (tag defaulting to appVersion). */}}
{{- define "secretmode.imageRef" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "secretmode.image" -}}
{{- include "secretmode.imageRef" (dict "image" .Values.image "root" .) -}}
{{- end -}}

{{- define "secretmode.agentImage" -}}
{{- include "secretmode.imageRef" (dict "image" .Values.agent.image "root" .) -}}
{{- end -}}

{{/*
A CEL term true when the list or map at PATH has an entry VAR for which TEST holds; false when
PATH is absent or null (the API server's converter writes a nil list without omitempty, such as
containers, as null), so no pod shape makes the term an evaluation error.
Arguments: (list PATH VAR TEST).
*/}}
{{- define "secretmode.celExists" -}}
{{- $path := index . 0 -}}
(has({{ $path }}) && {{ $path }} != null && {{ $path }}.exists({{ index . 1 }}, {{ index . 2 }}))
{{- end -}}

{{/* Name of the Secret the webhook pods mount (tls.crt, tls.key). */}}
{{- define "secretmode.tlsSecretName" -}}
{{- if eq .Values.certs.mode "provided" -}}
{{- required "certs.provided.secretName is required with certs.mode=provided" .Values.certs.provided.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "secretmode.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "secretmode.caSecretName" -}}
{{- printf "%s-ca" (include "secretmode.fullname" .) -}}
{{- end -}}

{{/* The webhook config file: .Values.config with the agent image filled in. */}}
{{- define "secretmode.configYaml" -}}
{{- $config := deepCopy .Values.config -}}
{{- $agent := merge (dict "image" (include "secretmode.agentImage" .)) $config.agent -}}
{{- $_ := set $config "agent" $agent -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Restricted container security context (Pod Security Standards "restricted"). */}}
{{- define "secretmode.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "secretmode.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* RBAC rules of `certs bootstrap`: its two Secrets and the one webhook configuration. */}}
{{- define "secretmode.certsRoleRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ include "secretmode.tlsSecretName" . | quote }}, {{ include "secretmode.caSecretName" . | quote }}]
  verbs: ["get", "update"]
{{- end -}}

{{- define "secretmode.certsClusterRoleRules" -}}
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["mutatingwebhookconfigurations"]
  resourceNames: [{{ include "secretmode.fullname" . | quote }}]
  verbs: ["get", "patch"]
{{- end -}}

{{/* The `certs bootstrap` container, shared by the hook Job and the renewal CronJob. */}}
{{- define "secretmode.certsContainer" -}}
- name: certs
  image: {{ include "secretmode.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - certs
    - bootstrap
    - --service={{ include "secretmode.fullname" . }}
    - --namespace={{ .Release.Namespace }}
    - --tls-secret={{ include "secretmode.tlsSecretName" . }}
    - --ca-secret={{ include "secretmode.caSecretName" . }}
    - --webhook-config={{ include "secretmode.fullname" . }}
    - --validity-days={{ .Values.certs.generated.validityDays }}
    - --renew-before-days={{ .Values.certs.generated.renewBeforeDays }}
    - --ca-validity-days={{ .Values.certs.generated.caValidityDays }}
    - --log-format={{ .Values.logFormat }}
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
    limits:
      memory: 64Mi
  securityContext:
    {{- include "secretmode.containerSecurityContext" . | nindent 4 }}
{{- end -}}

{{/* Hook annotations of the `certs bootstrap` Job and its RBAC. */}}
{{- define "secretmode.certsHookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade,post-install,post-upgrade
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}
