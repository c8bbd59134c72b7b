{{/* Names: one install per cluster (the APIService is cluster-wide), so names are fixed. */}}
{{- define "tsgw.name" -}}tailscale-gateway{{- end -}}
{{- define "tsgw.apiserver" -}}tailscale-gateway-apiserver{{- end -}}
{{- define "tsgw.etcd" -}}tailscale-gateway-etcd{{- end -}}
{{- define "tsgw.servingSecret" -}}
{{- .Values.apiService.certificate.existingSecret | default "tailscale-gateway-apiserver-tls" -}}
{{- end -}}
{{- define "tsgw.grpcSecret" -}}
{{- if eq .Values.extension.tls.source "secret" -}}
{{- .Values.extension.tls.existingSecret -}}
{{- else -}}
{{- include "tsgw.apiserver" . }}-grpc-tls
{{- end -}}
{{- end -}}
{{- define "tsgw.oauthSecret" -}}
{{- .Values.oauth.existingSecret | default .Values.oauth.secretName -}}
{{- end -}}

{{- define "tsgw.labels" -}}
app.kubernetes.io/name: tailscale-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ include "tsgw.tag" . | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tsgw.selector.apiserver" -}}
app.kubernetes.io/name: tailscale-gateway
app.kubernetes.io/component: apiserver
{{- end -}}
{{- define "tsgw.selector.etcd" -}}
app.kubernetes.io/name: tailscale-gateway
app.kubernetes.io/component: etcd
{{- end -}}

{{- define "tsgw.tag" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq $tag "latest" -}}{{- fail "image.tag: images are versioned; latest is refused" -}}{{- end -}}
{{- $tag -}}
{{- end -}}
{{- define "tsgw.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .repository (include "tsgw.tag" .root) -}}
{{- end -}}

{{- define "tsgw.serviceHost" -}}
{{- printf "%s.%s.svc" (include "tsgw.apiserver" .) .Release.Namespace -}}
{{- end -}}

{{/* The etcd client URLs the server uses. */}}
{{- define "tsgw.etcdServers" -}}
{{- if eq .Values.etcd.mode "external" -}}
{{- if not .Values.etcd.external.servers -}}{{- fail "etcd.mode external needs etcd.external.servers" -}}{{- end -}}
{{- join "," .Values.etcd.external.servers -}}
{{- else if eq .Values.etcd.mode "statefulset" -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:2379" (include "tsgw.etcd" $) $i (include "tsgw.etcd" $) $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- fail "etcd.mode must be statefulset or external" -}}
{{- end -}}
{{- end -}}

{{/*
The APIService; root is the chart context, caBundle the base64 CA (empty: none, e.g. before the
existing Secret exists), injectFrom a cert-manager Certificate ns/name whose CA cert-manager injects.
*/}}
{{- define "tsgw.apiservice" -}}
{{- $root := .root }}
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1alpha1.gateway.tailscale.com
  labels:
    {{- include "tsgw.labels" $root | nindent 4 }}
  {{- if .injectFrom }}
  annotations:
    cert-manager.io/inject-ca-from: {{ .injectFrom }}
  {{- end }}
spec:
  group: gateway.tailscale.com
  version: v1alpha1
  groupPriorityMinimum: {{ $root.Values.apiService.groupPriorityMinimum }}
  versionPriority: {{ $root.Values.apiService.versionPriority }}
  service:
    name: {{ include "tsgw.apiserver" $root }}
    namespace: {{ $root.Release.Namespace }}
    port: 443
  {{- if .caBundle }}
  caBundle: {{ .caBundle }}
  {{- end }}
{{- end -}}
