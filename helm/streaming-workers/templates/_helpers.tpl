{{- define "sw.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
streaming/pipeline: {{ .Values.pipeline.name | quote }}
{{- end -}}

{{- define "sw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The models directory inside the pod, from models.source. */}}
{{- define "sw.modelsDir" -}}
{{- if eq .Values.models.source "image" -}}
{{- .Values.models.imagePath -}}
{{- else -}}
/models
{{- end -}}
{{- end -}}

{{/* The pipeline config as the worker reads it: models_dir set by the chart. */}}
{{- define "sw.pipelineConfig" -}}
{{- $cfg := deepCopy .Values.pipeline -}}
{{- $_ := set $cfg "models_dir" (include "sw.modelsDir" .) -}}
{{- if (default dict .Values.tracing).endpoint -}}
{{- $tracing := deepCopy (default dict $cfg.tracing) -}}
{{- $_ := set $tracing "enabled" true -}}
{{- $_ := set $cfg "tracing" $tracing -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Drain deadline plus margin: SIGTERM always gets to drain and commit. */}}
{{- define "sw.terminationGrace" -}}
{{- $worker := default dict .Values.pipeline.worker -}}
{{- $drain := default 20 $worker.drain_timeout_s -}}
{{- add (int (ceil $drain)) .Values.terminationGraceMarginSeconds -}}
{{- end -}}

{{/* Deployment or StatefulSet: worker.kind, or under auto a StatefulSet for exactly-once
(stable pod names keep transactional ids across replaced pods) and a Deployment otherwise. */}}
{{- define "sw.workloadKind" -}}
{{- $kind := default "auto" (.Values.worker).kind -}}
{{- if eq $kind "auto" -}}
{{- if eq (toString (default "at-least-once" .Values.pipeline.delivery)) "exactly-once" -}}
StatefulSet
{{- else -}}
Deployment
{{- end -}}
{{- else -}}
{{- $kind -}}
{{- end -}}
{{- end -}}

{{/* Fail at install on combinations the schema cannot express. */}}
{{- define "sw.checks" -}}
{{- $partitions := int (default 4 .Values.pipeline.topics.partitions) -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled -}}
{{- fail "autoscaling: enable either hpa or keda, not both (they would fight over replicas)" -}}
{{- end -}}
{{- if and .Values.autoscaling.keda.enabled (gt (int .Values.autoscaling.keda.maxReplicaCount) $partitions) -}}
{{- fail (printf "autoscaling.keda.maxReplicaCount (%d) is above pipeline.topics.partitions (%d): replicas beyond the partition count sit idle; lower it or add partitions" (int .Values.autoscaling.keda.maxReplicaCount) $partitions) -}}
{{- end -}}
{{- if and .Values.autoscaling.hpa.enabled (gt (int .Values.autoscaling.hpa.maxReplicas) $partitions) -}}
{{- fail (printf "autoscaling.hpa.maxReplicas (%d) is above pipeline.topics.partitions (%d): replicas beyond the partition count sit idle; lower it or add partitions" (int .Values.autoscaling.hpa.maxReplicas) $partitions) -}}
{{- end -}}
{{- if and .Values.autoscaling.keda.enabled (gt (int .Values.autoscaling.keda.minReplicaCount) (int .Values.autoscaling.keda.maxReplicaCount)) -}}
{{- fail (printf "autoscaling.keda.minReplicaCount (%d) is above autoscaling.keda.maxReplicaCount (%d)" (int .Values.autoscaling.keda.minReplicaCount) (int .Values.autoscaling.keda.maxReplicaCount)) -}}
{{- end -}}
{{- if and .Values.autoscaling.hpa.enabled (gt (int .Values.autoscaling.hpa.minReplicas) (int .Values.autoscaling.hpa.maxReplicas)) -}}
{{- fail (printf "autoscaling.hpa.minReplicas (%d) is above autoscaling.hpa.maxReplicas (%d)" (int .Values.autoscaling.hpa.minReplicas) (int .Values.autoscaling.hpa.maxReplicas)) -}}
{{- end -}}
{{- if and (not (or .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled)) (gt (int .Values.replicaCount) $partitions) -}}
{{- fail (printf "replicaCount (%d) is above pipeline.topics.partitions (%d): the extra workers would get no partitions" (int .Values.replicaCount) $partitions) -}}
{{- end -}}
{{- $procs := int (default 1 (.Values.worker).processes) -}}
{{- if gt $procs 1 -}}
{{- $max := int .Values.replicaCount -}}
{{- $what := "replicaCount" -}}
{{- if .Values.autoscaling.keda.enabled -}}
{{- $max = int .Values.autoscaling.keda.maxReplicaCount -}}
{{- $what = "autoscaling.keda.maxReplicaCount" -}}
{{- else if .Values.autoscaling.hpa.enabled -}}
{{- $max = int .Values.autoscaling.hpa.maxReplicas -}}
{{- $what = "autoscaling.hpa.maxReplicas" -}}
{{- end -}}
{{- if gt (mul $max $procs) $partitions -}}
{{- fail (printf "%s (%d) x worker.processes (%d) = %d consumers is above pipeline.topics.partitions (%d): the extra processes would get no partitions; lower one of them or add partitions" $what $max $procs (mul $max $procs) $partitions) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (include "sw.workloadKind" .) "StatefulSet") (gt (len (include "sw.fullname" .)) 52) -}}
{{- fail (printf "the StatefulSet name %s is %d characters: at most 52 (its pods carry a controller-revision-hash label of the name plus 11); use a shorter release name" (include "sw.fullname" .) (len (include "sw.fullname" .))) -}}
{{- end -}}
{{- if hasKey .Values.pipeline "models_dir" -}}
{{- fail "pipeline.models_dir is set by the chart from models.source (image: models.imagePath; volume, objectStorage: /models): remove it" -}}
{{- end -}}
{{- $kafka := default dict .Values.pipeline.kafka -}}
{{- if hasKey $kafka "secrets_dir" -}}
{{- fail "pipeline.kafka.secrets_dir is set by the chart from kafka.credentialsSecret: remove it" -}}
{{- end -}}
{{- range $section := list "common" "consumer" "producer" -}}
{{- range $key, $_ := (get $kafka $section | default dict) -}}
{{- if has $key (list "sasl.password" "ssl.key.password" "ssl.keystore.password") -}}
{{- fail (printf "pipeline.kafka.%s.%s: a password never goes in values (it would sit in a ConfigMap): put it in the Secret named by kafka.credentialsSecret, under the key %s" $section $key $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range .Values.pipeline.model.versions -}}
{{- if and (hasPrefix "cuda" (toString (default "cpu" .device))) (not $.Values.gpu.enabled) -}}
{{- fail (printf "pipeline.model.versions: version %s runs on device %s but gpu.enabled is false: set gpu.enabled (and the GPU pool's nodeSelector / tolerations) or use device cpu" (toString .version) (toString .device)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.models.source "volume") (not .Values.models.volume.claimName) -}}
{{- fail "models.source is volume: set models.volume.claimName to an existing PersistentVolumeClaim" -}}
{{- end -}}
{{- if and (eq .Values.models.source "objectStorage") (not .Values.models.objectStorage.uri) -}}
{{- fail "models.source is objectStorage: set models.objectStorage.uri (e.g. s3://bucket/models/)" -}}
{{- end -}}
{{- end -}}
