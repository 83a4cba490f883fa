"""feddistill: federated knowledge distillation with model and update compression.

Flower coordinates the federation, Ray places the clients, PyTorch trains each
client's teacher and student. See README.md and ARCHITECTURE.md (the rooms, one
round's path file by file, where state lives, what may import what).
"""

__version__ = "0.1.0"
