package proxydeploy

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// PodSpec is the pod of a proxy running with serviceAccount and the command line args: the
// proxy container (cfg's image and resources, metrics port, readiness and liveness probes, a
// preStop sleep and a grace period covering the drain, no privilege, read-only root) and its
// state directory. Dedicated proxies and proxy pools
// (pkg/controllers/proxypool) run the same pod.
func PodSpec(cfg Config, serviceAccount string, args []string) corev1.PodSpec {
	return corev1.PodSpec{
		ServiceAccountName: serviceAccount, TerminationGracePeriodSeconds: ptr.To[int64](TerminationGracePeriodSeconds),
		Containers: []corev1.Container{{
			Name: containerName, Image: cfg.Image, ImagePullPolicy: cfg.PullPolicy, Resources: cfg.Resources,
			Args: args,
			Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}}},
			Ports:        []corev1.ContainerPort{{Name: "metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP}},
			VolumeMounts: []corev1.VolumeMount{{Name: "state", MountPath: stateDir}},
			Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
				Sleep: &corev1.SleepAction{Seconds: PreStopSeconds}}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/readyz", Port: intstr.FromString("metrics")}}, PeriodSeconds: ReadinessPeriodSeconds},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromString("metrics")}}},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true), RunAsNonRoot: ptr.To(true),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
		Volumes: []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}
}
