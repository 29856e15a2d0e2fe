"""The directory of people outside SCIM: lookup and creation under one normalisation."""
