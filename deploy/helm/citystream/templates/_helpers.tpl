{{/* Names, labels and the pieces every citystream pod shares. */}}

{{- define "citystream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of one component: call with (dict "root" $ "component" "bridge"). */}}
{{- define "citystream.labels" -}}
app.kubernetes.io/name: citystream
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "citystream.selectorLabels" -}}
app.kubernetes.io/name: citystream
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of a role: image.repository-<role>:tag (one Dockerfile target per role). */}}
{{- define "citystream.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := printf "%s-%s" $img.repository .role -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $repo }}{{ end -}}
{{- if $img.digests }}{{- with (get $img.digests .role) }}{{ $repo = printf "%s@%s" $repo . }}{{ end }}{{- end -}}
{{- if contains "@" $repo }}{{ $repo }}{{ else }}{{ printf "%s:%s" $repo ($img.tag | default .root.Chart.AppVersion) }}{{ end -}}
{{- end -}}

{{/* Writable paths: everything a stage writes lives under this directory (an emptyDir or a PVC). */}}
{{- define "citystream.dataDir" -}}/var/lib/citystream{{- end -}}

{{/*
The settings tree the chart renders: .Values.settings with the paths and listeners the chart owns
forced on top (no relative .citystream/ path can survive: the root filesystem is read-only).
*/}}
{{- define "citystream.settings" -}}
{{- $data := include "citystream.dataDir" . -}}
{{- $s := deepCopy .Values.settings -}}
{{- $forced := dict
  "stack" (dict "home" $data)
  "metrics" (dict "host" "0.0.0.0" "port" (int .Values.metricsPort))
  "worker" (dict "data_dir" (printf "%s/worker" $data))
  "sink" (dict "frames_dir" (printf "%s/frames" $data))
  "gateway" (dict "state_dir" (printf "%s/gateway" $data))
  "console" (dict "host" "0.0.0.0" "port" (int .Values.console.port)) -}}
{{- $s = mustMergeOverwrite $s $forced -}}
{{- /* Sequence tracking is exact only when one bridge sees all of a gateway's messages; the shared
subscription spreads them over the replicas, so more than one replica turns it off unless set. */ -}}
{{- $br := get $s "bridge" | default dict -}}
{{- if and (gt (int .Values.stages.bridge.replicas) 1) (not (hasKey $br "track_sequences")) -}}
{{- $_ := set $br "track_sequences" false -}}
{{- $_ := set $s "bridge" $br -}}
{{- end -}}
{{- $ch := get $s "clickhouse" | default dict -}}
{{- if hasPrefix "chdb://" ($ch.dsn | default "chdb://") -}}
{{- $_ := set $ch "dsn" (printf "chdb://%s/clickhouse" $data) -}}
{{- $_ := set $s "clickhouse" $ch -}}
{{- end -}}
{{- with .Values.tls.mqtt.secretName -}}
{{- $mq := get $s "mqtt" | default dict -}}
{{- $t := dict "ca_file" "/etc/citystream/tls/mqtt/ca.crt" -}}
{{- if $.Values.tls.mqtt.clientCert -}}
{{- $_ := set $t "cert_file" "/etc/citystream/tls/mqtt/tls.crt" -}}
{{- $_ := set $t "key_file" "/etc/citystream/tls/mqtt/tls.key" -}}
{{- end -}}
{{- $_ := set $mq "tls" $t -}}
{{- $_ := set $s "mqtt" $mq -}}
{{- end -}}
{{- with .Values.tls.kafka.secretName -}}
{{- $k := get $s "kafka" | default dict -}}
{{- $_ := set $k "ssl_ca_location" "/etc/citystream/tls/kafka/ca.crt" -}}
{{- if $.Values.tls.kafka.clientCert -}}
{{- $_ := set $k "ssl_certificate_location" "/etc/citystream/tls/kafka/tls.crt" -}}
{{- $_ := set $k "ssl_key_location" "/etc/citystream/tls/kafka/tls.key" -}}
{{- end -}}
{{- $_ := set $s "kafka" $k -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{- define "citystream.embedded" -}}
{{- hasPrefix "chdb://" (.Values.settings.clickhouse.dsn | default "chdb://") -}}
{{- end -}}

{{/* Pod annotations: roll the pods when the settings, the secret or the TLS material change. */}}
{{- define "citystream.checksums" -}}
checksum/config: {{ include "citystream.settings" . | sha256sum }}
{{- $ns := .Release.Namespace }}
{{- $secrets := list .Values.existingSecret .Values.tls.mqtt.secretName .Values.tls.kafka.secretName }}
{{- range .Values.extraSecretEnv }}{{ $secrets = append $secrets .secretName }}{{ end }}
{{- $seen := list }}
{{- range $secrets | compact | uniq }}
{{- $seen = append $seen (dict "name" . "data" ((lookup "v1" "Secret" $ns .).data | default dict)) }}
{{- end }}
checksum/secret: {{ toJson (dict "secrets" $seen "revision" .Values.secretRevision) | sha256sum }}
{{- end -}}

{{- define "citystream.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsUser }}
fsGroup: {{ .Values.securityContext.runAsUser }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "citystream.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsUser }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment: secrets come only from existing Secrets, never from values. */}}
{{- define "citystream.env" -}}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- range .Values.extraSecretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef: {name: {{ .secretName }}, key: {{ .key }}}
{{- end }}
{{- end -}}

{{- define "citystream.envFrom" -}}
{{- if .Values.existingSecret }}
- secretRef:
    name: {{ .Values.existingSecret }}
{{- end }}
{{- end -}}

{{/* Mounts every citystream container has: settings (read-only), /tmp, the data directory, TLS. */}}
{{- define "citystream.volumeMounts" -}}
- {name: settings, mountPath: /etc/citystream/citystream.yaml, subPath: citystream.yaml, readOnly: true}
- {name: tmp, mountPath: /tmp}
- {name: data, mountPath: {{ include "citystream.dataDir" . }}}
{{- if .Values.tls.mqtt.secretName }}
- {name: tls-mqtt, mountPath: /etc/citystream/tls/mqtt, readOnly: true}
{{- end }}
{{- if .Values.tls.kafka.secretName }}
- {name: tls-kafka, mountPath: /etc/citystream/tls/kafka, readOnly: true}
{{- end }}
{{- end -}}

{{/* Volumes besides data: call with (dict "root" $ "configMap" NAME). */}}
{{- define "citystream.volumes" -}}
- name: settings
  configMap: {name: {{ .configMap }}}
- name: tmp
  emptyDir: {sizeLimit: {{ .root.Values.tmpSizeLimit }}}
{{- with .root.Values.tls.mqtt }}
{{- if .secretName }}
- name: tls-mqtt
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - {key: {{ .caKey }}, path: ca.crt}
      {{- if .clientCert }}
      - {key: {{ .certKey }}, path: tls.crt}
      - {key: {{ .keyKey }}, path: tls.key}
      {{- end }}
{{- end }}
{{- end }}
{{- with .root.Values.tls.kafka }}
{{- if .secretName }}
- name: tls-kafka
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - {key: {{ .caKey }}, path: ca.crt}
      {{- if .clientCert }}
      - {key: {{ .certKey }}, path: tls.crt}
      - {key: {{ .keyKey }}, path: tls.key}
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The identity variable a StatefulSet pod takes from its own (stable) name. */}}
{{- define "citystream.identityEnv" -}}
{{- $vars := dict "bridge" "CITYSTREAM_BRIDGE__CLIENT_ID" "worker" "CITYSTREAM_WORKER__INSTANCE_ID" "sink" "CITYSTREAM_SINK__INSTANCE_ID" -}}
- name: {{ get $vars . }}
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
{{- end -}}
