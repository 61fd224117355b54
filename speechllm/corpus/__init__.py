"""Offline corpus building: KJV text (:mod:`.kjv_text`), Debian TTS voices (:mod:`.tts_voices`),
generated noise (:mod:`.noise`) and the plan -> synthesize -> data dirs driver (:mod:`.synth_corpus`)."""
