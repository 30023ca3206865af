{{/* Names and labels shared by the templates. */}}

{{/* The base name of the release's objects: "tabby", or "<release>-tabby". */}}
{{- define "tabby.fullname" -}}
{{- if or (eq .Release.Name "tabby") (hasPrefix "tabby" .Release.Name) -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tabby" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tabby.nodeName" -}}{{ include "tabby.fullname" . }}-node{{- end -}}
{{- define "tabby.cniName" -}}{{ include "tabby.fullname" . }}-cni{{- end -}}
{{- define "tabby.configName" -}}{{ include "tabby.fullname" . }}-config{{- end -}}
{{- define "tabby.cniTokenName" -}}{{ include "tabby.fullname" . }}-cni-token{{- end -}}

{{/* Namespace of the Secrets BGP passwords name. */}}
{{- define "tabby.secretNamespace" -}}
{{- default .Release.Namespace .Values.bgp.secretNamespace -}}
{{- end -}}

{{- define "tabby.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tabby.labels" -}}
app.kubernetes.io/name: tabby
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tabby.nodeSelectorLabels" -}}
app.kubernetes.io/name: tabby
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{/* The CNI network config: the chart's cni/10-tabby.conflist with the values applied. */}}
{{- define "tabby.conflist" -}}
{{- $conf := .Files.Get "cni/10-tabby.conflist" | fromJson -}}
{{- $plugin := index $conf.plugins 0 -}}
{{- $_ := set $plugin "kubeconfig" (printf "%s/tabby-kubeconfig" .Values.cni.confDir) -}}
{{- $_ = set $plugin "mtu" (int .Values.cni.mtu) -}}
{{- $_ = set $plugin "log_level" .Values.cni.logLevel -}}
{{- $_ = set $plugin "policy_setup_timeout" .Values.cni.policySetupTimeout -}}
{{- $_ = set $plugin "agent_socket" "/var/run/tabby/tabby-node.sock" -}}
{{- toPrettyJson $conf -}}
{{- end -}}
