"""A local Kubernetes control plane (etcd, apiserver, controller-manager, scheduler) whose
kubelets are simulated by kwok: pods are scheduled for real, no container ever runs."""
