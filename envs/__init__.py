"""Environments: where models meet data (language tasks, video QA, Gym rollouts)."""
