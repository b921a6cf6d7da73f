"""qembed.model"""
