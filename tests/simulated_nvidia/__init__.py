"""A stand-in for NVIDIA's software on the simulated plane, sharing no code with mlplatform.

On a real cluster a node's GPUs appear in Kubernetes only through NVIDIA's software: the
device plugin advertises extended resources, the MIG manager partitions the GPUs, GPU
feature discovery (through Node Feature Discovery) labels the node, the GPU operator runs
all of them, and on GKE the provider's own device plugin does. None of it runs here (kwok
runs no container), so this controller does what they would do, from what they would read:
the hardware in the node, the pods the platform scheduled onto it (their images, command,
environment and mounted ConfigMaps), the GPU operator's ClusterPolicy, GKE's node labels.

Its facts about GPUs come from `facts.py` and the GPU operator's published MIG layouts in
the upstream mirror, never from `mlplatform.gpu`: if the platform schedules no plugin on a
node, or hands it a wrong config, the node advertises nothing, as a real one would.
"""
