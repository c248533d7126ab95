"""Whole models. Import the one you need from its module; the paper's LM is re-exported here."""

from .xlstm_lm import xLSTMLM

__all__ = ["xLSTMLM"]
