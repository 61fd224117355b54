"""Acoustic features: Kaldi-compatible fbank, global CMVN, SpecAugment, speed perturbation."""
