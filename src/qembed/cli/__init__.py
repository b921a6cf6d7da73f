"""qembed.cli"""
