"""Profiler plugins (Neuron Activation Profiles)."""
