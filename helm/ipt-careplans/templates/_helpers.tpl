{{/* The chart's name, at most 63 characters. */}}
{{- define "ipt-careplans.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects, at most 63 characters. */}}
{{- define "ipt-careplans.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ipt-careplans.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ipt-careplans.labels" -}}
helm.sh/chart: {{ include "ipt-careplans.chart" . }}
{{ include "ipt-careplans.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ipt-careplans
{{- end }}

{{/* Labels that select the release's pods: the server's and the migration's. */}}
{{- define "ipt-careplans.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ipt-careplans.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels that select the server pods only. */}}
{{- define "ipt-careplans.serverSelectorLabels" -}}
{{ include "ipt-careplans.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "ipt-careplans.workerSelectorLabels" -}}
{{ include "ipt-careplans.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "ipt-careplans.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ipt-careplans.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The container image: repository with the digest, or the tag (default: appVersion). */}}
{{- define "ipt-careplans.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the database URL, and its key. */}}
{{- define "ipt-careplans.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "ipt-careplans.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ipt-careplans.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else }}
{{- "database-url" }}
{{- end }}
{{- end }}

{{/*
The Secret the migration Job reads the database URL from. A pre-install hook runs before
the release's own Secret exists, so when the chart manages the URL the Job gets a hook
Secret of its own.
*/}}
{{- define "ipt-careplans.migrationSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-migration" (include "ipt-careplans.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The Secret holding the token signing key, and its key. */}}
{{- define "ipt-careplans.signingKeySecretName" -}}
{{- if .Values.tokenSigningKey.existingSecret }}
{{- .Values.tokenSigningKey.existingSecret }}
{{- else }}
{{- printf "%s-signing-key" (include "ipt-careplans.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ipt-careplans.signingKeySecretKey" -}}
{{- if .Values.tokenSigningKey.existingSecret }}
{{- .Values.tokenSigningKey.existingSecretKey }}
{{- else }}
{{- "signing-key.pem" }}
{{- end }}
{{- end }}

{{- define "ipt-careplans.signingKeyDir" -}}
/etc/ipt-careplans/signing-key
{{- end }}

{{/* Pod security context shared by the server and the migration Job. */}}
{{- define "ipt-careplans.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context shared by the server and the migration Job. */}}
{{- define "ipt-careplans.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The host of database.url, empty when the chart does not see the URL. */}}
{{- define "ipt-careplans.databaseHost" -}}
{{- if and .Values.database.url (not .Values.database.existingSecret) }}
{{- (urlParse .Values.database.url).hostname }}
{{- end }}
{{- end }}

{{/*
The port the pods connect to the database at: database.port, else the port of
database.url, else PostgreSQL's 5432. The two must agree when both are given.
*/}}
{{- define "ipt-careplans.databasePort" -}}
{{- $fromUrl := "" }}
{{- if and .Values.database.url (not .Values.database.existingSecret) }}
{{- $fromUrl = regexFind "[0-9]+$" (regexFind ":[0-9]+$" (urlParse .Values.database.url).host) }}
{{- end }}
{{- $given := "" }}
{{- if not (kindIs "invalid" .Values.database.port) }}
{{- $given = .Values.database.port | int64 | toString }}
{{- end }}
{{- if and $given $fromUrl (ne $given $fromUrl) }}
{{- fail (printf "database.port (%s) differs from the port of database.url (%s): leave database.port unset or make them agree" $given $fromUrl) }}
{{- end }}
{{- coalesce $given $fromUrl "5432" }}
{{- end }}

{{/*
The NetworkPolicy peers the pods may reach a server at (the database, Redis): the peers
given in the values when there are any, else derived from the host of the server's URL (an
IP address: that address only; a Service name <service>.<namespace>.svc[.cluster.local]:
that namespace). Any other host, or a URL kept in an existing Secret, the chart cannot
turn into a peer, and an open egress would let a compromised pod reach any host at that
port: the render fails and asks for the peers.
Arguments (a dict): peers, host, what (e.g. "database"), value (the values key of the
peers), secret (the values key of the existing Secret).
*/}}
{{- define "ipt-careplans.peers" -}}
{{- $host := .host }}
{{- if .peers }}
{{- toYaml .peers }}
{{- else if regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" $host }}
- ipBlock:
    cidr: {{ printf "%s/32" $host }}
{{- else if and (contains ":" $host) (regexMatch "^[0-9a-fA-F:.]+$" $host) }}
- ipBlock:
    cidr: {{ printf "%s/128" $host | quote }}
{{- else if regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\\.svc(\\.cluster\\.local)?$" $host }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ index (splitList "." $host) 1 | quote }}
{{- else if $host }}
{{- fail (printf "%s is required: the %s host %q is neither an IP address nor a <service>.<namespace>.svc name, so the chart cannot limit the pods' %s egress to it. List its NetworkPolicy peers, e.g. [{ipBlock: {cidr: 10.0.12.7/32}}], or set networkPolicy.enabled: false" .value .what $host .what) }}
{{- else }}
{{- fail (printf "%s is required: the %s URL is in %s, so the chart cannot limit the pods' %s egress to it. List its NetworkPolicy peers, e.g. [{ipBlock: {cidr: 10.0.12.7/32}}] or [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}}], or set networkPolicy.enabled: false" .value .what .secret .what) }}
{{- end }}
{{- end }}

{{/* The NetworkPolicy peers of the database (see ipt-careplans.peers). */}}
{{- define "ipt-careplans.databasePeers" -}}
{{- include "ipt-careplans.peers" (dict "peers" .Values.networkPolicy.databasePeers "host" (include "ipt-careplans.databaseHost" .) "what" "database" "value" "networkPolicy.databasePeers" "secret" "database.existingSecret") }}
{{- end }}

{{/* Whether the token endpoint's rate-limit counters are in Redis: "true" or empty. */}}
{{- define "ipt-careplans.redisEnabled" -}}
{{- if or .Values.rateLimit.redis.url .Values.rateLimit.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* The Secret holding the Redis URL, and its key. */}}
{{- define "ipt-careplans.redisSecretName" -}}
{{- if .Values.rateLimit.redis.existingSecret }}
{{- .Values.rateLimit.redis.existingSecret }}
{{- else }}
{{- printf "%s-redis" (include "ipt-careplans.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ipt-careplans.redisSecretKey" -}}
{{- if .Values.rateLimit.redis.existingSecret }}
{{- .Values.rateLimit.redis.existingSecretKey }}
{{- else }}
{{- "redis-url" }}
{{- end }}
{{- end }}

{{/* The port the pods reach Redis at: rateLimit.redis.port, else the URL's, else 6379. */}}
{{- define "ipt-careplans.redisPort" -}}
{{- $redis := .Values.rateLimit.redis }}
{{- $fromUrl := "" }}
{{- if and $redis.url (not $redis.existingSecret) }}
{{- $fromUrl = regexFind "[0-9]+$" (regexFind ":[0-9]+$" (urlParse $redis.url).host) }}
{{- end }}
{{- $given := "" }}
{{- if not (kindIs "invalid" $redis.port) }}
{{- $given = $redis.port | int64 | toString }}
{{- end }}
{{- if and $given $fromUrl (ne $given $fromUrl) }}
{{- fail (printf "rateLimit.redis.port (%s) differs from the port of rateLimit.redis.url (%s): leave the port unset or make them agree" $given $fromUrl) }}
{{- end }}
{{- coalesce $given $fromUrl "6379" }}
{{- end }}

{{/* The NetworkPolicy peers of Redis (see ipt-careplans.peers). */}}
{{- define "ipt-careplans.redisPeers" -}}
{{- $redis := .Values.rateLimit.redis }}
{{- $host := "" }}
{{- if and $redis.url (not $redis.existingSecret) }}
{{- $host = (urlParse $redis.url).hostname }}
{{- end }}
{{- include "ipt-careplans.peers" (dict "peers" .Values.networkPolicy.redisPeers "host" $host "what" "Redis" "value" "networkPolicy.redisPeers" "secret" "rateLimit.redis.existingSecret") }}
{{- end }}

{{/* Whether a key-encryption key is configured: "true" or empty. */}}
{{- define "ipt-careplans.keyEncryptionEnabled" -}}
{{- if or .Values.keyEncryptionKey.key .Values.keyEncryptionKey.existingSecret }}true{{ end }}
{{- end }}

{{- define "ipt-careplans.keyEncryptionSecretName" -}}
{{- if .Values.keyEncryptionKey.existingSecret }}
{{- .Values.keyEncryptionKey.existingSecret }}
{{- else }}
{{- printf "%s-key-encryption" (include "ipt-careplans.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ipt-careplans.keyEncryptionSecretKey" -}}
{{- if .Values.keyEncryptionKey.existingSecret }}
{{- .Values.keyEncryptionKey.existingSecretKey }}
{{- else }}
{{- "key-encryption-key" }}
{{- end }}
{{- end }}

{{- define "ipt-careplans.keyEncryptionDir" -}}
/etc/ipt-careplans/key-encryption-key
{{- end }}
