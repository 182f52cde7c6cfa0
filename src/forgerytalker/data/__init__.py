"""MMTT data: the released dataset as a Hub-format `datasets` folder, and MMTT-style synthesis from face photos."""
