"""Files in and out: the file layer (files.py) under the native checkpoint (native.py), each
foreign format (adapterhub.py, peft.py, transformers.py, t5.py; the families' names in
families.py) and the head written beside an export (head.py); dispatch.py above them all
(load_adapter, export_adapter)."""
