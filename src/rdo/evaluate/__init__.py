"""Evaluation: scorer accuracy (`rdo eval accuracy`) and, later, policy evaluations."""
