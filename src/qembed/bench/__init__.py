"""qembed.bench"""
