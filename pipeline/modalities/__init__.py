"""The feature modalities (pose, holistic, facial, scenic), their registry and shared parts."""
