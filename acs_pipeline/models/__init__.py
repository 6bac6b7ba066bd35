"""The benchmark's models (S4, ResNet-18/50 1D, ECG-OMI, HuBERT-ECG), the logistic baseline, a
registry that builds any of them by name and profile (``registry``; ``specs`` names them without
importing torch), safe checkpoint loading and the authors' released weights (``released``).
"""
