#compdef anydepth

_anydepth_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _ANYDEPTH_COMPLETE=complete_zsh anydepth)
}

compdef _anydepth_completion anydepth