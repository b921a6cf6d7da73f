"""qembed.eval"""
