"""feddistill: federated knowledge distillation with model and update compression.

Flower coordinates the federation, Ray places the clients, PyTorch trains each
client's teacher and student. See README.md and DESIGN.md.
"""

__version__ = "0.1.0"
