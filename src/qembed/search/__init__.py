"""qembed.search"""
