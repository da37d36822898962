"""A stand-in for Kubeflow's Profile controller on the simulated plane, where no container runs.

It does what upstream's controller does with a Profile (kubeflow/kubeflow
components/profile-controller/controllers/profile_controller.go, v1.10), from upstream's
behaviour alone, never from mlplatform: the tests judge mlplatform's objects against it.
"""
