# Where corpora live on this site. Recipes read their corpus root from here; edit for your cluster.
# Real human speech for evaluation rows (optional; recipes skip it cleanly when absent):
REALSPEECH=${REALSPEECH:-${MAIN_ROOT}/../shared/data/realspeech}
# LibriSpeech root (contains LibriSpeech/train-clean-100, ...), used by egs/librispeech:
LIBRISPEECH=${LIBRISPEECH:-downloads}
