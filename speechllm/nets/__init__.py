"""Neural-network building blocks: subsampling, encoders, decoders, CTC head, losses.

Encoders and decoders are picked by name from the plain-dict registries
``speechllm.nets.encoders.ENCODERS`` and ``speechllm.nets.decoders.DECODERS``.
"""
