"""Operator registrations: fake tensors, autograd and the per-backend operator of each fused op."""
