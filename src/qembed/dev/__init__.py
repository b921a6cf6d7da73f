"""qembed.dev"""
