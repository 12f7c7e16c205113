"""Drivers: how each modality's model is fed through a memory policy (text generation and likelihood,
video inputs and frame statistics, a Decision Transformer stepped through an episode).

A driver knows a model family's inputs, never a task's format or metric: those live in ``namm.tasks``.
"""
